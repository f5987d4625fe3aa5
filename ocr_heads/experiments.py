"""Downstream experiments: answer-quality under head masking (exp_masking) and sink redistribution (exp_sink).

One *run* = one dataset x one intervention (a head set, or none) on one model. Its samples stream to
``OUT/{experiment}/{model}/{stem}.samples.jsonl`` (a rerun resumes), its summary goes to
``{stem}.json`` (config, heads, metrics, n, per-sample predictions) and one row per metric is added
to ``OUT/{experiment}.csv``. The scripts ``exp_masking.py`` / ``exp_sink.py`` only call ``*_main``.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
import textwrap
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ocr_heads.caveats import model_note
from ocr_heads.cli import Parser, UserError, count_help, error_line, positive_int, run_cli, setup_logging
from ocr_heads.heads import check_heads_exist
from ocr_heads.identity import data_fingerprint, differences
from ocr_heads.interventions import mask_heads, redistribute_sink_heads
from ocr_heads.io import ensure_writable_dir, read_json, write_json_atomic
from ocr_heads.metrics import aggregate
from ocr_heads.models import ModelAdapter, ModelInputs, load_adapter
from ocr_heads.models.options import adapter_kwargs, add_model_args
from ocr_heads.paths import heads_file, model_name
from ocr_heads.runner import SAMPLE_ERRORS, Shard, collect, run_batches, shard_logs
from ocr_heads.scores import default_score
from ocr_heads.selection import choose_heads as select_heads
from ocr_heads.selection import load_head_ranking
from ocr_heads.tasks import DEFAULT_N, TASKS, Example, Task, get_task
from ocr_heads.tasks.base import example_rng

logger = logging.getLogger(__name__)

# model first: a results CSV may hold several models' rows, which must never be averaged together.
CSV_COLUMNS = ["model", "protocol", "dataset", "task", "head_set", "k", "seed", "metric", "value", "n", "note"]
DEFAULT_MODEL = "Qwen/Qwen2-VL-2B-Instruct"


# ---------------------------------------------------------------- head lists and head sets


def default_heads_path(model_id: str, task: str) -> Path:
    """Where step3 writes the documented-rule head list of this model's default score for ``task`` (image: OCR
    heads, text: retrieval heads)."""
    return heads_file("scores", model_name(model_id), default_score(task), "documented")


# ---------------------------------------------------------------- data


def resolve_sources(datasets: list[str], data: list[str] | None) -> dict[str, str | None]:
    """Map each dataset to its source from ``--data`` items: ``NAME=PATH`` for one dataset, or a bare
    PATH that is either a dataset folder (holding e.g. ``DocVQA/``, ``nq/...`` as download.sh lays
    them out) or, with a single dataset, that dataset's own source. Unmapped datasets use their
    task default (a copy under dataset/, else the hub)."""
    sources: dict[str, str | None] = {}
    bare = []
    for item in data or []:
        name, sep, path = item.partition("=")
        if sep and name in TASKS:
            if name not in datasets:
                raise ValueError(f"--data {item}: {name} is not among --datasets {datasets}")
            sources[name] = path
        else:
            bare.append(item)
    for name in datasets:
        local = get_task(name).local_default
        for path in bare:
            if name not in sources and local and (Path(path) / local).exists():
                sources[name] = str(Path(path) / local)
    if bare:
        unassigned = [name for name in datasets if name not in sources]
        if len(datasets) == 1 and len(bare) == 1 and unassigned:
            sources[unassigned[0]] = bare[0]
        elif unassigned:
            raise ValueError(f"--data {' '.join(bare)}: cannot tell which of {unassigned} it is for; "
                             "write NAME=PATH")
    return {name: sources.get(name) for name in datasets}


def example_refs(task: Task, rows, n: int | None) -> list[tuple[int, str]]:
    """(row index, id) of the first ``n`` usable rows, as ``Task.examples`` picks them, without
    building any example: pages are decoded one sample at a time, only for samples still to do."""
    refs = []
    for index in range(len(rows)):
        if n is not None and len(refs) >= n:
            break
        if task.keep is None or task.keep(rows[index]):
            refs.append((index, task.row_id(rows[index], index)))
    if n is not None and len(refs) < n:
        logger.warning("%s: only %d usable rows (asked for %d)", task.name, len(refs), n)
    return refs


def example_inputs(adapter: ModelAdapter, example: Example) -> ModelInputs:
    """The model inputs of one example: pages + prompt, or the text context + the rest of the prompt."""
    if example.pages:
        return adapter.image_inputs(example.pages, example.prompt)
    if example.context is None:
        raise ValueError(f"example {example.id} has neither pages nor a context")
    # Example.prompt is "{context}\n\n{question part}", exactly what text_inputs composes.
    return adapter.text_inputs(example.context, example.prompt.removeprefix(f"{example.context}\n\n"))


# ---------------------------------------------------------------- one run


@dataclass
class RunConfig:
    experiment: str  # "masking" or "sink"
    model_id: str
    dataset: str
    task: str  # "image" (OCR heads) or "text" (retrieval heads)
    head_set: str
    k: int
    seed: int
    heads: list[str] = field(default_factory=list)
    heads_path: str | None = None
    beta: float | None = None
    source: str | None = None
    n: int | None = DEFAULT_N
    data_seed: int = 0
    max_new_tokens: int = 32
    tag: str | None = None  # keeps runs on other data or settings apart: results under NAME-TAG
    protocol: str = ""  # the image protocol, when the command line has one

    @property
    def stem(self) -> str:
        if self.head_set == "none":
            return self.dataset  # the unmodified model: one baseline run per dataset
        name = f"{self.dataset}_{self.task}_{self.head_set}_k{self.k}"
        if self.head_set.startswith("random"):
            name += f"_seed{self.seed}"
        if self.beta is not None:
            name += f"_beta{self.beta:g}"
        return name

    def identity(self) -> dict:
        """What must not change between a run and its resumption (``n`` may grow)."""
        keys = ("experiment", "model_id", "dataset", "head_set", "heads", "beta", "source", "data_seed",
                "max_new_tokens", "protocol")
        return {**{key: getattr(self, key) for key in keys}, "data_fingerprint": data_fingerprint(self.source)}

    def model_label(self, name: str) -> str:
        """The name results are filed under: the model's, plus the tag."""
        return f"{name}-{self.tag}" if self.tag else name


def intervention(adapter: ModelAdapter, cfg: RunConfig) -> AbstractContextManager:
    # The head set, not the experiment, picks the edit: exp_sink --do_masking without --unmasking masks
    # its top-k heads, as the authors' exp_sink.py does.
    if cfg.head_set == "none":
        return nullcontext()
    if cfg.head_set == "sink_top":
        return redistribute_sink_heads(adapter, cfg.heads, cfg.beta if cfg.beta is not None else 0.4)
    return mask_heads(adapter, cfg.heads)


def _check_resume(path: Path, cfg: RunConfig) -> None:
    identity = cfg.identity()
    if path.exists():
        previous = read_json(path)
        if previous != identity:
            changed = "; ".join(differences(previous, identity))
            raise UserError(f"{path.parent / cfg.stem} holds a run made with other settings: {changed}. Nothing "
                            "was written; pass --tag NAME or another --out to keep both")
    else:
        write_json_atomic(path, identity)


def run_one(adapter: ModelAdapter, cfg: RunConfig, out: Path, shard: Shard | None = None,
            merge_only: bool = False, batch_size: int = 1) -> dict | None:
    """Evaluate one dataset under one intervention; returns the summary written to ``{stem}.json``.

    ``batch_size`` samples are generated together (left-padded); the results do not depend on it.

    With a shard, only its samples are run; the summary is written by a single run, by ``merge_only``,
    or (under ``accelerate launch``) by the first process once all are done; others return None.
    """
    shard = shard or Shard()
    task = get_task(cfg.dataset)
    model = cfg.model_label(adapter.name)
    run_dir = out / cfg.experiment / model
    # Data first: a mistyped --data must say "not found", not that an earlier run differs.
    rows = task.rows(cfg.source)
    refs = example_refs(task, rows, cfg.n)
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_resume(run_dir / f"{cfg.stem}.config.json", cfg)
    log = run_dir / shard.log_name(cfg.stem)

    def process(batch: list[tuple[int, str]]) -> list[dict | Exception]:
        # Examples are built one by one (a bad row fails alone), then generated together.
        outcomes: list[dict | Exception] = []
        ready: list[tuple[int, Example, ModelInputs]] = []
        for index, example_id in batch:
            try:
                example = task.to_example(rows[index], index, rows, example_rng(task.name, cfg.data_seed, example_id))
                ready.append((len(outcomes), example, example_inputs(adapter, example)))
                outcomes.append({})
            except SAMPLE_ERRORS as err:
                outcomes.append(err)
        generated = adapter.generate_batch([inputs for _, _, inputs in ready], cfg.max_new_tokens)
        for (slot, example, _), tokens in zip(ready, generated, strict=True):
            prediction = adapter.decode(tokens).strip()
            try:
                outcomes[slot] = {"prediction": prediction, "golds": example.golds,
                                  "scores": task.score(prediction, example)}
            except SAMPLE_ERRORS as err:
                outcomes[slot] = err
        return outcomes

    if not merge_only:
        with intervention(adapter, cfg):
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
        "config": asdict(cfg),
        "protocol": adapter.settings(),
        "metrics": metrics,
        "n": n,
        "n_failed": len(failed),
        "failed": [{"id": record["id"], "error": record["error"]} for record in failed],
        "predictions": [{k: record[k] for k in ("id", "prediction", "golds", "scores")} for record in records],
    }
    if note:
        summary["warning"] = note
    write_json_atomic(run_dir / f"{cfg.stem}.json", summary)
    if n:
        append_csv(out / f"{cfg.experiment}.csv", csv_rows(cfg, metrics, n, model, note))
    logger.info("%s %s: %s over %d samples (%d failed)", cfg.experiment, cfg.stem,
                ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()), n, len(failed))
    return summary


def csv_rows(cfg: RunConfig, metrics: dict[str, float], n: int, model: str, note: str = "") -> list[dict]:
    base = {"model": model, "protocol": cfg.protocol, "dataset": cfg.dataset, "task": cfg.task,
            "head_set": cfg.head_set, "k": cfg.k, "seed": cfg.seed}
    rows = [{**base, "metric": metric, "value": f"{value:.6f}", "n": n, "note": note}
            for metric, value in metrics.items()]
    if cfg.experiment == "sink":
        for row in rows:
            row["beta"] = "" if cfg.beta is None or cfg.head_set != "sink_top" else f"{cfg.beta:g}"
    return rows


def append_csv(path: Path, rows: list[dict]) -> None:
    """Append rows (header on a new file); a row already present verbatim is not added again, so a
    resumed or repeated run does not duplicate its result."""
    columns = list(rows[0])
    existing = set()
    if path.exists():
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames != columns:
                raise UserError(f"{path} has columns {reader.fieldnames}, not {columns} (an older layout?); "
                                "nothing was added to it: use another --out")
            existing = {tuple(row[c] for c in columns) for row in reader}
    new = [row for row in rows if tuple(str(row[c]) for c in columns) not in existing]
    if not new:
        return
    write_header = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        if write_header:
            writer.writeheader()
        writer.writerows(new)


# ---------------------------------------------------------------- command lines


def _common_parser(description: str, epilog: str, default_datasets: list[str],
                   default_k: int) -> argparse.ArgumentParser:
    parser = Parser(description=textwrap.fill(description, 100), epilog=epilog,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=default_datasets, choices=sorted(TASKS), metavar="NAME",
                        help=f"datasets to evaluate: {', '.join(sorted(TASKS))} "
                        f"(default: {' '.join(default_datasets)})")
    parser.add_argument("--task", choices=["image", "text"], default="image",
                        help="whose heads: image = OCR heads (step3 *_fg list), text = retrieval heads (*_te list)")
    add_model_args(parser, DEFAULT_MODEL)
    parser.add_argument("--num_of_masking_head", type=positive_int, default=default_k,
                        help=f"k, the number of heads to intervene on (default {default_k})")
    parser.add_argument("--heads", type=Path, default=None,
                        help="head list: step3 output, a plain list or a score file "
                        "(default scores/heads/MODEL_{fg|te}_documented.json by --task)")
    parser.add_argument("--seed", type=int, default=1234, help="seed of the random head sets (default 1234)")
    parser.add_argument("--data", nargs="+", default=None, metavar="[NAME=]PATH",
                        help="local data: NAME=PATH per dataset (passkey: a step1 output dir), or a folder laid "
                        "out like dataset/ (download.sh), or with one dataset just its path "
                        "(default: dataset/ copies, else the hub)")
    parser.add_argument("--n", type=positive_int, default=DEFAULT_N, help=count_help("per dataset", DEFAULT_N))
    parser.add_argument("--data_seed", type=int, default=0,
                        help="seed of per-example context composition (nq/hotpot distractors; default 0)")
    parser.add_argument("--max_new_tokens", type=positive_int, default=32, help="greedy decoding length (default 32)")
    parser.add_argument("--out", type=Path, default=Path("results"), help="results root (default results/)")
    parser.add_argument("--tag", default=None,
                        help="file the results under NAME-TAG (folder and CSV model column): keeps runs on other "
                        "data or settings apart from earlier ones in the same --out")
    parser.add_argument("--shard", default=None, help="i/n: run every n-th sample starting at i (0-based); "
                        "under `accelerate launch` each process takes its own shard and the first one merges")
    parser.add_argument("--merge", action="store_true", help="only merge existing shard logs into the results")
    parser.add_argument("--batch_size", type=positive_int, default=1,
                        help="samples generated together (left-padded; results equal --batch_size 1; default 1)")
    parser.add_argument("--tmp", type=int, default=1, metavar="N",
                        help="accepted for the authors' commands (their scratch folder tmpN/ for page images); "
                        "no effect here: pages are passed in memory")
    return parser


OUTPUTS = """outputs (NAME = last component of --model_id, NAME-TAG with --tag;
         STEM = dataset[_task_headset_kK[_seedS]{extra}]):
  OUT/{exp}/NAME/STEM.samples.jsonl  per-sample log (prediction, golds, scores); rerunning resumes
  OUT/{exp}/NAME/STEM.json           config, heads, metrics, n, failures, per-sample predictions
  OUT/{exp}.csv                      one row per metric: {columns}
"""


def masking_parser() -> argparse.ArgumentParser:
    parser = _common_parser(
        "Masking experiment: answer quality when the top-k OCR (--task image) or retrieval (--task text) heads, "
        "or k random heads, are masked (their output before o_proj zeroed at every position). Without "
        "--do_masking the unmodified model is evaluated (head_set none).",
        OUTPUTS.format(exp="masking", extra="", columns=", ".join(CSV_COLUMNS))
        + "head_set: none | top | random (--is_all_random) | random_disjoint (--is_all_random --no_intersection)",
        ["doc"], 10)
    parser.add_argument("--do_masking", action="store_true", help="mask the head set (else: baseline, no masking)")
    parser.add_argument("--is_all_random", action="store_true", help="k random heads instead of the top k")
    parser.add_argument("--no_intersection", action="store_true",
                        help="with --is_all_random: draw only from heads not in the head list")
    parser.add_argument("--fine_grained", action="store_true",
                        help="accepted for the paper's commands; OCR head lists are always the fine-grained ones")
    return parser


def sink_parser() -> argparse.ArgumentParser:
    parser = _common_parser(
        "Sink experiment: answer quality when the top-k OCR (--task image) or retrieval (--task text) heads move "
        "part of their attention off the sink (key 0): p0 -> beta*p0, the rest spread over the other keys in "
        "proportion (mass preserved). The flags mean what they mean in the authors' exp_sink.py: "
        "--do_masking --unmasking applies the edit (head_set sink_top); --do_masking alone masks the top-k heads "
        "instead (head_set top); without --do_masking the unmodified model is evaluated (head_set none), "
        "with or without --unmasking.",
        OUTPUTS.format(exp="sink", extra="_betaB", columns=", ".join([*CSV_COLUMNS, "beta"])),
        ["doc", "mdocs"], 2)
    parser.add_argument("--do_masking", action="store_true",
                        help="intervene on the top-k heads: the sink edit with --unmasking, else masking "
                        "(without it: baseline, no edit)")
    parser.add_argument("--unmasking", action="store_true",
                        help="with --do_masking: redistribute the sink instead of masking (alone: no effect)")
    parser.add_argument("--fine_grained", action="store_true",
                        help="accepted for the authors' commands; OCR head lists are always the fine-grained ones")
    parser.add_argument("--beta", type=float, default=0.4, help="fraction of the sink probability kept (default 0.4)")
    return parser


def _head_set(args: argparse.Namespace, experiment: str) -> str:
    if experiment == "sink":
        if not args.do_masking:
            if args.unmasking:
                logger.warning("--unmasking has no effect without --do_masking (as in the authors' exp_sink.py): "
                               "evaluating the unmodified model")
            return "none"
        return "sink_top" if args.unmasking else "top"
    if not args.do_masking:
        if args.is_all_random or args.no_intersection:
            logger.warning("--is_all_random/--no_intersection have no effect without --do_masking")
        return "none"
    if args.no_intersection and not args.is_all_random:
        raise ValueError("--no_intersection needs --is_all_random (it picks random heads outside the head list)")
    if args.is_all_random:
        return "random_disjoint" if args.no_intersection else "random"
    return "top"


def _configs(args: argparse.Namespace, experiment: str, adapter: ModelAdapter,
             sources: dict[str, str | None]) -> Iterator[RunConfig]:
    head_set = _head_set(args, experiment)
    heads_path = None
    ranking: list[str] = []
    if head_set in ("top", "random_disjoint", "sink_top"):
        heads_path = args.heads or default_heads_path(args.model_id, args.task)
        ranking = load_head_ranking(heads_path)
        check_heads_exist(ranking, adapter.shape.num_layers, adapter.shape.num_heads)
    k = 0 if head_set == "none" else args.num_of_masking_head
    heads = select_heads(head_set, k, ranking, adapter.shape.num_layers, adapter.shape.num_heads, args.seed,
                         adapter.scoreable_layers)
    k = len(heads)  # what is masked: a head list shorter than --num_of_masking_head gives fewer heads
    logger.info("head set %s (k=%d): %s", head_set, k, ", ".join(heads) or "none")
    beta = args.beta if head_set == "sink_top" else None
    for dataset in args.datasets:
        yield RunConfig(experiment, args.model_id, dataset, args.task, head_set, k, args.seed, heads,
                        str(heads_path) if heads_path else None, beta, sources[dataset], args.n, args.data_seed,
                        args.max_new_tokens, args.tag, getattr(args, "protocol", None) or "")


def run_main(experiment: str, argv: list[str] | None = None) -> int:
    parser = masking_parser() if experiment == "masking" else sink_parser()
    args = parser.parse_args(argv)
    setup_logging()
    return run_cli(_run, experiment, args)


def _run(experiment: str, args: argparse.Namespace) -> int:
    if experiment == "sink" and not 0.0 <= args.beta <= 1.0:
        raise UserError(f"--beta must be in [0, 1], got {args.beta}")
    ensure_writable_dir(args.out)
    shard = Shard.parse(args.shard)
    sources = resolve_sources(args.datasets, args.data)
    if args.heads is None and _head_set(args, experiment) in ("top", "random_disjoint", "sink_top"):
        path = default_heads_path(args.model_id, args.task)
        if not path.is_file():
            raise UserError(f"no head list at {path}: run step3 first or pass --heads")
    adapter = load_adapter(args.model_id, **adapter_kwargs(args, shard.device_map()))
    try:
        configs = list(_configs(args, experiment, adapter, sources))
    except KeyError as err:
        raise UserError(f"unknown key {err} in the head list") from None
    note = model_note(adapter.model.config, args.model_id)
    if note:
        logger.warning("%s: %s", args.model_id, note)
    scored, errors = 0, 0
    for cfg in configs:
        try:
            summary = run_one(adapter, cfg, args.out, shard, args.merge, args.batch_size)
            # None: this shard's share is logged and the merge writes the results.
            scored += 1 if summary is None else summary["n"]
        except (FileNotFoundError, ValueError, KeyError, UserError) as err:
            # One dataset's problem must not stop the others; it is still reported in the one error style.
            print(f"{error_line(err)} ({experiment} on {cfg.dataset})", file=sys.stderr)
            errors += 1
    if errors:
        return 2
    if not scored:
        raise UserError(f"no sample was scored: every sample failed (see the per-sample logs under "
                        f"{args.out / experiment})")
    return 0


def masking_main(argv: list[str] | None = None) -> int:
    return run_main("masking", argv)


def sink_main(argv: list[str] | None = None) -> int:
    return run_main("sink", argv)

