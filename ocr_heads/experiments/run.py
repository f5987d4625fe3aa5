"""One experiment *run* = one dataset x one head set (and its edit, or none) on one model.

Its samples stream to ``OUT/{experiment}/{model}/{stem}.samples.jsonl`` (a rerun resumes), its summary goes
to ``{stem}.json`` (config, heads, metrics, n, per-sample predictions) and its one row per metric is written
into ``OUT/{experiment}.csv``, replacing that run's earlier rows (a rerun or a larger --n). What the edit is
comes from the registered experiment (:mod:`ocr_heads.experiments.registry`); nothing here knows masking
from sink.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ocr_heads.core.errors import UserError
from ocr_heads.core.io import lock_output, write_json_atomic, write_text_atomic
from ocr_heads.core.kinds import Modality
from ocr_heads.core.paths import experiment_csv, experiment_dir
from ocr_heads.core.provenance import MODEL_KEY, TOY_NOTE, claim, data_fingerprint, model_fingerprint, model_note
from ocr_heads.core.registry import lazy
from ocr_heads.core.runner import SAMPLE_ERRORS, Shard, collect, run_batches, shard_logs
from ocr_heads.experiments.base import ADDED_COLUMNS, DOCUMENTED, NONE
from ocr_heads.experiments.data import example_inputs, example_refs
from ocr_heads.experiments.reading import READING_COLUMNS, reading_rows
from ocr_heads.experiments.registry import all_options, get_experiment
from ocr_heads.scores.selection import needs_ranking
from ocr_heads.tasks import DEFAULT_N, Example, Task, get_task
from ocr_heads.tasks.base import example_rng
from ocr_heads.tasks.metrics import aggregate
from ocr_heads.tasks.prompting import DIRECT, RECONSTRUCTED, extract_answer, with_prompt

if TYPE_CHECKING:  # type hints only: the experiment registry imports this module, and must stay torch-free
    from ocr_heads.models import ModelAdapter, ModelInputs

logger = logging.getLogger(__name__)

# Imported on first use: listing experiments loads no torch.
generate_reading = lazy("ocr_heads.experiments.reading:generate_reading")
generated_pieces = lazy("ocr_heads.models.base:generated_pieces")
# Settings added after the first release, with their defaults: a run at the default writes files without them.
ADDED_KEYS = {"prompt": DIRECT, "selection": DOCUMENTED, "record_reading": False, "reading_heads": []}
TOY_COT_NOTE = "the toy cannot reason (trained to read 5-digit passkeys only): its chains of thought are not reasoning"


@dataclass
class RunConfig:
    experiment: str  # a registered experiment's name ("masking", "sink")
    model_id: str
    dataset: str
    task: Modality  # whose heads: image = OCR heads, text = retrieval heads
    head_set: str  # "none", or one of the experiment's head sets
    k: int
    seed: int
    heads: list[str] = field(default_factory=list)
    heads_path: str | None = None
    options: dict[str, float] = field(default_factory=dict)  # the edit's options, e.g. {"beta": 0.4} (sink_top)
    source: str | None = None
    n: int | None = DEFAULT_N
    data_seed: int = 0
    max_new_tokens: int = 32
    tag: str | None = None  # keeps runs on other data or settings apart: results under NAME-TAG
    protocol: str = ""  # the image protocol, when the command line has one
    knobs: dict[str, object] = field(default_factory=dict)  # the family knobs given (--min_pixels ...), if any
    model_fingerprint: str | None = None  # the loaded files' fingerprint (core.provenance): what the model is
    prompt: str = DIRECT  # "direct" or "cot" (ocr_heads.tasks.prompting)
    selection: str = DOCUMENTED  # which head list a ranked head set reads: "documented" (step3) or "authors"
    record_reading: bool = False  # record, per generated step, where the reading heads look (STEM.reading.csv)
    reading_heads: list[str] = field(default_factory=list)  # the heads whose reading is recorded
    choices: dict[str, str] = field(default_factory=dict)  # the experiment's named choices, e.g. {"mask_mode": ...}

    def __post_init__(self) -> None:
        self.task = Modality(self.task)  # given as the command line's plain string: any other word is a ValueError

    @property
    def _stem(self) -> str:
        if self.head_set == NONE:
            return self.dataset  # the unmodified model: one baseline run per dataset
        name = f"{self.dataset}_{self.task}_{self.head_set}_k{self.k}"
        if get_experiment(self.experiment).edit(self.head_set).selection.startswith("random"):
            name += f"_seed{self.seed}"  # a random draw: its seed tells it apart
        for option, value in self.options.items():
            name += f"_{option}{value:g}"
        if self.selection != DOCUMENTED and self.reads_ranking:
            name += f"_{self.selection}"  # another head choice: another run
        return name + "".join(f"_{value}" for value in self.changed_choices().values())

    def changed_choices(self) -> dict[str, str]:
        """The choices set to something other than their default: they name the run apart (stem, identity), so
        that runs with the defaults keep the names and settings files they had before the choice existed."""
        declared = {choice.name: choice.default for choice in get_experiment(self.experiment).choices}
        return {name: value for name, value in self.choices.items() if declared.get(name) != value}

    @property
    def stem(self) -> str:
        """The run's file stem: dataset[_task_headset_kK[_seedS]{options}[_authors][_MASKMODE]][_cot]."""
        return self._stem if self.prompt == DIRECT else f"{self._stem}_{self.prompt}"

    @property
    def reads_ranking(self) -> bool:
        """Whether the head set is drawn from a head list (top k, random outside it): only then the selection
        of that list matters."""
        edit = get_experiment(self.experiment).edit(self.head_set)
        return edit is not None and needs_ranking(edit.selection)

    def record(self) -> dict:
        """The settings as result files carry them (``config``): ``options`` spread into one key per option any
        registered experiment declares, None where this run takes none (masking runs carry ``"beta": null``)."""
        record = {}
        for key, value in asdict(self).items():
            if key == "options":
                record.update({option.name: value.get(option.name) for option in all_options()})
            elif key in ADDED_KEYS:  # settings added later: only when not the default, so older files keep theirs
                if value != ADDED_KEYS[key]:
                    record[key] = value
            elif key == "choices":
                record.update(value)
            elif key != "knobs" or value:  # knobs only when given: files without them keep their layout
                record[key] = value
        return record

    def identity(self) -> dict:
        """What must not change between a run and its resumption (``n`` may grow). The model is pinned by its
        fingerprint, not its path: a copy elsewhere is the same model, other weights under one name are not."""
        keys = ("experiment", MODEL_KEY, "dataset", "head_set", "heads", *(o.name for o in all_options()),
                "source", "data_seed", "max_new_tokens", "protocol")
        record = self.record()
        identity = {key: record[key] for key in keys}
        if self.knobs:  # other page settings, other image tokens: not the same run
            identity["knobs"] = self.knobs
        for key in ("prompt", "selection"):  # as record(): absent at the default, so older runs still resume
            if key in record:
                identity[key] = record[key]
        identity.update(self.changed_choices())
        return {**identity, "data_fingerprint": data_fingerprint(self.source)}

    def model_label(self, name: str) -> str:
        """The name results are filed under: the model's, plus the tag."""
        return f"{name}-{self.tag}" if self.tag else name


def intervention(adapter: ModelAdapter, cfg: RunConfig) -> AbstractContextManager:
    """The context the run's samples generate in: its head set's edit (as its experiment declares it), given the
    edit's options and the experiment's choices."""
    edit = get_experiment(cfg.experiment).edit(cfg.head_set)
    return nullcontext() if edit is None else edit.context(adapter, cfg.heads, {**cfg.options, **cfg.choices})


def _check_resume(path: Path, cfg: RunConfig) -> None:
    claim(path, cfg.identity(), str(path.parent / cfg.stem), "pass --tag NAME or another --out to keep both",
          recorded={"model_id": cfg.model_id})


def run_one(adapter: ModelAdapter, cfg: RunConfig, out: Path, shard: Shard | None = None,
            merge_only: bool = False, batch_size: int = 1, wait: bool = False) -> dict | None:
    """Evaluate one dataset under one intervention; returns the summary written to ``{stem}.json``.

    ``batch_size`` samples are generated together (left-padded); the results do not depend on it.

    With a shard, only its samples are run; the summary is written by a single run, by ``merge_only``,
    or (under ``accelerate launch``) by the first process once all are done; others return None.
    """
    shard = shard or Shard()
    if cfg.model_fingerprint is None:
        cfg.model_fingerprint = model_fingerprint(cfg.model_id)
    task = get_task(cfg.dataset)
    model = cfg.model_label(adapter.name)
    run_dir = experiment_dir(out, cfg.experiment, model)
    # Data first: a mistyped --data must say "not found", not that an earlier run differs.
    rows = task.rows(cfg.source)
    refs = example_refs(task, rows, cfg.n)
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_resume(run_dir / f"{cfg.stem}.config.json", cfg)
    log = run_dir / shard.log_name(cfg.stem)
    # One writer per run stem (per shard log): a second process is refused, or waits with --wait.
    lock_output(log.with_name(log.name.replace(".samples.jsonl", ".lock")), wait)

    prepare = None  # set inside the intervention when its edit needs each batch's samples

    def process(batch: list[tuple[int, str]]) -> list[dict | Exception]:
        # Examples are built one by one (a bad row fails alone), then generated together.
        outcomes: list[dict | Exception] = []
        ready: list[tuple[int, Example, ModelInputs]] = []
        for index, example_id in batch:
            try:
                example = task.to_example(rows[index], index, rows, example_rng(task.name, cfg.data_seed, example_id))
                example = with_prompt(example, cfg.prompt)
                ready.append((len(outcomes), example, example_inputs(adapter, example)))
                outcomes.append({})
            except SAMPLE_ERRORS as err:
                outcomes.append(err)
        if not ready:
            return outcomes
        batch_inputs = [inputs for _, _, inputs in ready]
        if prepare is not None:  # an edit whose key sets depend on each sample (e.g. --mask_mode evidence_keys)
            prepare([example for _, example, _ in ready], batch_inputs)
        readings: list[dict | None] = [None] * len(ready)
        if cfg.record_reading:
            generated, readings = generate_reading(adapter, batch_inputs, [example for _, example, _ in ready],
                                                   cfg.reading_heads, cfg.max_new_tokens)
        else:
            generated = adapter.generate_batch(batch_inputs, cfg.max_new_tokens)
        for (slot, example, _), tokens, reading in zip(ready, generated, readings, strict=True):
            try:
                outcomes[slot] = outcome(task, example, adapter.decode(tokens).strip(), len(tokens), cfg)
                if reading is not None:
                    outcomes[slot]["reading"] = {**reading, "pieces": generated_pieces(adapter, tokens)}
            except SAMPLE_ERRORS as err:
                outcomes[slot] = err
        return outcomes

    if not merge_only:
        with intervention(adapter, cfg) as active:
            # An edit whose key sets depend on each sample (BatchKeys) gets every batch before it generates.
            prepare = getattr(active, "prepare_batch", None)
            run_batches(shard.select(refs), lambda ref: ref[1], process, log, f"{cfg.experiment} {cfg.stem}",
                        batch_size)
        if shard.launched:
            shard.wait_for_all()
        if shard.index != 0 or (shard.count > 1 and not shard.launched):
            return None
    records, failed = collect(shard_logs(run_dir, cfg.stem), [example_id for _, example_id in refs])
    metrics = aggregate([record["scores"] for record in records], task.metrics) if records else {"n": 0}
    n = int(metrics.pop("n"))
    note = model_note(adapter.model.config, cfg.model_id)
    summary = {
        "experiment": cfg.experiment,
        "model": model,
        "config": cfg.record(),
        "protocol": adapter.settings(),
        "metrics": metrics,
        "n": n,
        "n_failed": len(failed),
        "failed": [{"id": record["id"], "error": record["error"]} for record in failed],
        "predictions": [{k: record[k] for k in ("id", "prediction", *COT_KEYS, "golds", "scores") if k in record}
                        for record in records],
    }
    warning = run_note(note, cfg)
    if warning:
        summary["warning"] = warning
    if cfg.prompt != DIRECT:
        rules = [record.get("answer_rule", "") for record in records]
        summary["answer_rules"] = {rule: rules.count(rule) for rule in sorted(set(rules))}
    if cfg.record_reading:
        summary["reading"] = str(write_reading(run_dir / f"{cfg.stem}.reading.csv", records, cfg))
    write_json_atomic(run_dir / f"{cfg.stem}.json", summary)
    if n:
        replace_csv_rows(experiment_csv(out, cfg.experiment), csv_rows(cfg, metrics, n, model, note), cfg.experiment)
    logger.info("%s %s: %s over %d samples (%d failed)", cfg.experiment, cfg.stem,
                ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()), n, len(failed))
    return summary


def outcome(task: Task, example: Example, output: str, generated: int, cfg: RunConfig) -> dict:
    """One sample's log record. ``direct``: the output is the prediction. ``cot``: the prediction is the answer
    extracted from the output (ocr_heads.tasks.prompting), the raw output, the rule that found the answer and
    whether decoding stopped at --max_new_tokens are kept beside it."""
    if cfg.prompt == DIRECT:
        return {"prediction": output, "golds": example.golds, "scores": task.score(output, example)}
    extraction = extract_answer(output)
    return {"prediction": extraction.answer, "output": output, "answer_rule": extraction.rule,
            "truncated": generated >= cfg.max_new_tokens, "golds": example.golds,
            "scores": task.score(extraction.answer, example)}


# What a cot sample's record holds beyond a direct one's (kept in the summary's predictions).
COT_KEYS = ("output", "answer_rule", "truncated")


def run_note(note: str, cfg: RunConfig) -> str:
    """The caveat of a run's results: the model's, plus, for a CoT run, that its protocol is reconstructed (and,
    on the toy, that it cannot reason)."""
    if cfg.prompt == DIRECT:
        return note
    parts = [note, RECONSTRUCTED]
    if note == TOY_NOTE:
        parts.append(TOY_COT_NOTE)
    return "; ".join(part for part in parts if part)


def write_reading(path: Path, records: list[dict], cfg: RunConfig) -> Path:
    """STEM.reading.csv from the samples' reading records (samples run before --record_reading have none)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=READING_COLUMNS)
    writer.writeheader()
    for record in records:
        if "reading" in record:
            writer.writerows(reading_rows(record["id"], cfg.prompt, str(cfg.task), cfg.head_set,
                                          record["reading"]["pieces"], record["reading"]))
    write_text_atomic(path, buffer.getvalue())
    return path


def csv_rows(cfg: RunConfig, metrics: dict[str, float], n: int, model: str, note: str = "") -> list[dict]:
    """One row per metric, in the experiment's columns; an option's column is empty where the run takes none."""
    base = {"model": model, "protocol": cfg.protocol, "dataset": cfg.dataset, "task": cfg.task,
            "head_set": cfg.head_set, "k": cfg.k, "seed": cfg.seed}
    experiment = get_experiment(cfg.experiment)
    options = {option.name: f"{cfg.options[option.name]:g}" if option.name in cfg.options else ""
               for option in experiment.options}
    added = {"prompt": cfg.prompt, "selection": cfg.selection if cfg.reads_ranking else ""}
    choices = {choice.name: cfg.choices.get(choice.name, choice.default) for choice in experiment.choices}
    return [{**base, "metric": metric, "value": f"{value:.6f}", "n": n, "note": run_note(note, cfg), **added,
             **options, **choices} for metric, value in metrics.items()]


def added_column_value(column: str, row: Mapping[str, str], experiment: str) -> str:
    """The value of a column added since a row was written, as the row ran: direct prompts, the documented head
    list where the row's head set read one, and an experiment choice's default (mask_mode: output)."""
    if column == "prompt":
        return "direct"
    if column == "selection":
        try:
            edit = get_experiment(experiment).edit(row.get("head_set", ""))
        except ValueError:
            return ""
        return DOCUMENTED if edit is not None and needs_ranking(edit.selection) else ""
    defaults = {choice.name: choice.default for choice in get_experiment(experiment).choices}
    if column in defaults:
        return defaults[column]
    raise ValueError(f"no value for added column {column!r}")


# What a result row is not keyed by: its numbers and caveat. Everything else (model, protocol, dataset, head
# set, k, seed of a random draw, the edit's options, metric) names the run folder OUT/{exp}/MODEL/STEM, whose
# config.json pins the rest (model fingerprint, head list, data and its fingerprint, knobs, decoding).
NOT_KEYS = ("value", "n", "note")


def row_key(row: dict, experiment: str) -> tuple[str, ...]:
    """What a row stands for: one run's metric. The seed counts only for a random head set (a fixed set's run
    is the same run under any --seed)."""
    key = {column: str(value) for column, value in row.items() if column not in NOT_KEYS}
    try:
        edit = get_experiment(experiment).edit(key.get("head_set", ""))
    except ValueError:  # a head set this version does not know: keep its seed
        edit = None
    if key.get("head_set") == NONE or (edit is not None and not edit.selection.startswith("random")):
        key["seed"] = ""
    return tuple(sorted(key.items()))


def upgraded_rows(path: Path, found: list[str], columns: list[str], rows: list[dict], experiment: str) -> list[dict]:
    """``rows`` of a CSV with columns ``found`` in the layout ``columns``. A CSV written before a column was added
    (``prompt``/``selection``, or an experiment choice such as masking's ``mask_mode``) gets, in each row, the value
    that row ran with (:func:`added_column_value`); any other difference is refused (nothing is written)."""
    if found == columns:
        return rows
    choices = {choice.name for choice in get_experiment(experiment).choices}
    missing = [column for column in columns if column not in found]
    in_order = [column for column in columns if column in found] == found
    if not in_order or not set(missing) <= {*ADDED_COLUMNS, *choices}:
        raise UserError(f"{path} has columns {found}, not {columns} (an older layout?); nothing was added to it: "
                        "use another --out")
    logger.info("%s: adding column(s) %s to its %d earlier row(s)", path, ", ".join(missing), len(rows))
    return [{column: row[column] if column in found else added_column_value(column, row, experiment)
             for column in columns} for row in rows]


def replace_csv_rows(path: Path, rows: list[dict], experiment: str) -> None:
    """Write ``rows`` into the result CSV, replacing the rows of the same run and metric (a rerun, or the same
    run extended with a larger --n, has one row per metric: its latest). The file is rewritten atomically."""
    columns = list(rows[0])
    kept: list[dict] = []
    if path.exists():
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            kept = list(reader)
            kept = upgraded_rows(path, reader.fieldnames or [], columns, kept, experiment)
    # An earlier row of the same run and metric gives its place to the new one (the file keeps its order).
    new = {row_key(row, experiment): row for row in rows}
    merged: list[dict] = []
    replaced = 0
    for row in kept:
        key = row_key(row, experiment)
        if key not in new:
            merged.append(row)
            continue
        replaced += 1
        if new[key] is not None:
            merged.append(new[key])
            new[key] = None  # placed: a second old row of this key is dropped
    merged.extend(row for row in new.values() if row is not None)
    if replaced:
        logger.info("%s: %d earlier row(s) of this run replaced", path, replaced)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(merged)
    write_text_atomic(path, buffer.getvalue())
