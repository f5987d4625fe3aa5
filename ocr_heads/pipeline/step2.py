"""Step 2: score every decoder head with a registered head score (:mod:`ocr_heads.scores`): by default
OCR (image) or retrieval (text) behaviour.

``main`` is the command line shared by ``step2_ocr_retrieval_head.py`` and ``step2_text_retrieval_head.py``;
one sample is scored by :mod:`ocr_heads.pipeline.sample_scoring`. The model side (torch, transformers, the
attention function, sample scoring) is imported by the functions that run it: ``--help`` and a wrong flag answer
without loading torch.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

import ocr_heads
from ocr_heads.core.commandline import Parser, count_help, positive_int, run_cli, setup_logging
from ocr_heads.core.errors import EmptyRunError, FailedSamplesError
from ocr_heads.core.heads import all_heads, parse_head
from ocr_heads.core.io import ensure_writable_dir, lock_output, read_jsonl
from ocr_heads.core.kinds import Alignment, Modality
from ocr_heads.core.provenance import MODEL_KEY, claim, data_fingerprint, model_fingerprint, model_note, model_origin
from ocr_heads.core.runner import Shard, collect, run_batches_to_logs, shard_logs
from ocr_heads.data.samples import SAMPLES_FILE, Sample, load_sample_dirs
from ocr_heads.models import load_adapter
from ocr_heads.models.options import adapter_kwargs, add_model_args, knob_names
from ocr_heads.models.protocol import NATIVE, PAPER
from ocr_heads.pipeline.step1 import DEFAULT_OUT
from ocr_heads.scores import DEFAULT, HeadScore, Settings, all_scores, get_score, listing, of_modality, rules
from ocr_heads.scores.files import ScoreFile, load_scores, save_scores, score_stem
from ocr_heads.scores.geometry import AUTHORS_OVERLAP, DEFAULT_OVERLAP

if TYPE_CHECKING:
    from ocr_heads.attention import AttentionRecorder
    from ocr_heads.models import ModelAdapter
    from ocr_heads.pipeline.sample_scoring import SampleResult

logger = logging.getLogger(__name__)
ALL = "all"  # --score all: every registered score of the script's modality


@dataclass(frozen=True)
class Step2Config:
    kind: Modality  # the script, and the modality of its scores
    max_new_tokens: int = 32
    alignment: Alignment = Alignment.PRODUCE
    overlap: float | None = None  # None: the rule's own (10% for produce, the released 0.1% for authors)
    # Registered score names (or one name), scored in one pass; "all": every score of the script's modality that
    # implements the alignment; None: the script's default (ocr / retrieval).
    score: str | Sequence[str] | None = None

    def __post_init__(self) -> None:
        # Given as plain strings (the command line's): a ValueError for any other word.
        object.__setattr__(self, "kind", Modality(self.kind))
        object.__setattr__(self, "alignment", Alignment(self.alignment))
        names = [self.score] if isinstance(self.score, str) else list(self.score or [DEFAULT[self.kind]])
        if ALL in names:
            names = [name if name != ALL else every for name in names
                     for every in ([name] if name != ALL else self._every())]
        object.__setattr__(self, "score", tuple(dict.fromkeys(names)))  # in the order given, each once

    def _every(self) -> list[str]:
        """``--score all``: the scores of this script's modality that implement its alignment."""
        return [score.name for score in of_modality(self.kind) if self.alignment in score.alignments]

    @property
    def head_scores(self) -> list[HeadScore]:
        return [get_score(name) for name in self.score]

    @property
    def head_score(self) -> HeadScore:
        """The run's score, when it has one (several: :attr:`head_scores`)."""
        if len(self.score) != 1:
            raise ValueError(f"this run has {len(self.score)} scores ({', '.join(self.score)}), not one")
        return get_score(self.score[0])

    @property
    def settings(self) -> Settings:
        return Settings(self.alignment, self.overlap)

    @property
    def overlap_threshold(self) -> float:
        return rules.overlap_threshold(self.alignment, self.overlap)


def score_batch(adapter: ModelAdapter, recorder: AttentionRecorder, samples: list[Sample],
                cfg: Step2Config) -> list[SampleResult | Exception]:
    """Samples generated together, scored by the configured score (see :mod:`ocr_heads.pipeline.sample_scoring`)."""
    from ocr_heads.pipeline import sample_scoring

    return sample_scoring.score_batch(adapter, recorder, samples, cfg.head_score, cfg.settings, cfg.max_new_tokens)


def score_one(adapter: ModelAdapter, recorder: AttentionRecorder, sample: Sample, cfg: Step2Config) -> SampleResult:
    """One sample alone; raises what it failed with."""
    from ocr_heads.pipeline import sample_scoring

    return sample_scoring.score_sample(adapter, recorder, sample, cfg.head_score, cfg.settings,
                                       cfg.max_new_tokens)


def per_head_lists(records: list[dict], heads: list[str], not_scoreable: list[int] = ()) -> dict[str, list[float]]:
    """Concatenate every sample's rows (events for OCR, one row for retrieval) into per-head lists.

    Heads of ``not_scoreable`` layers (no attention rows, e.g. linear attention) get an empty list: they
    have no events, which is not the same as scoring 0 on every event.
    """
    rows = [row for record in records for row in record["values"]]
    matrix = np.asarray(rows, dtype=np.float64).reshape(len(rows), len(heads))
    return {head: [] if parse_head(head)[0] in not_scoreable else matrix[:, i].tolist()
            for i, head in enumerate(heads)}


def image_token_summary(records: list[dict]) -> dict | None:
    """Image tokens per page over the scored samples: min, max, mean and the count of each value."""
    counts = [n for record in records for n in record.get("image_tokens", [])]
    if not counts:
        return None
    values, freq = np.unique(counts, return_counts=True)
    return {"pages": len(counts), "min": int(values[0]), "max": int(values[-1]), "mean": float(np.mean(counts)),
            "counts": {str(int(v)): int(f) for v, f in zip(values, freq, strict=True)}}


def _git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def write_scores(out_dir: Path, stem: str, adapter_info: dict, cfg: Step2Config, data: list[Path],
                 order: list[str], score: HeadScore | None = None) -> tuple[int, int, int]:
    """Merge every log of one score of the run (single or shards) into its score files; returns (scored, failed,
    events). ``score``: which of the run's scores (default: its only one)."""
    import torch  # for their versions in the meta file
    import transformers

    score = score or cfg.head_score

    records, failed = collect(shard_logs(out_dir, stem), order)
    heads = all_heads(adapter_info["num_layers"], adapter_info["num_heads"])
    meta = {
        "kind": score.name,
        **adapter_info,
        "data": str(data[0]) if len(data) == 1 else [str(path) for path in data],
        "data_fingerprint": data_fingerprints(data),
        "n_samples": len(records),
        "n_failed": len(failed),
        "n_events": sum(r["events"] for r in records),
        "alignment": cfg.alignment,
        "overlap_threshold": cfg.overlap_threshold if cfg.kind == Modality.IMAGE else None,
        **score.meta,
        "max_new_tokens": cfg.max_new_tokens,
        "mean_recall": float(np.mean([r["recall"] for r in records])) if records else None,
        **({"image_tokens_per_page": image_token_summary(records)} if cfg.kind == Modality.IMAGE else {}),
        "versions": {"ocr_heads": ocr_heads.__version__, "torch": torch.__version__.split("+")[0],
                     "transformers": transformers.__version__},
        "git_sha": _git_sha(),
    }
    if records:
        save_scores(out_dir / f"{stem}.json",
                    per_head_lists(records, heads, adapter_info.get("not_scoreable_layers", [])), meta)
    return len(records), len(failed), meta["n_events"]


class ScoreChoice(argparse.Action):
    """``--score NAME [NAME ...]`` or ``--score all``. Without a value, or with a name nobody registered: the
    registered scores, one line each, and exit status 2."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        unknown = [value for value in values if value != ALL and value not in all_scores()]
        if not values or unknown:
            given = f", not {unknown[0]!r}" if unknown else ""
            parser.exit(2, f"error: --score takes a registered score (or several, or {ALL}){given}: NAME, file tag, "
                        "modality, "
                        f"definition:\n{listing()}\n")
        setattr(namespace, self.dest, list(values))


def build_parser(kind: str) -> argparse.ArgumentParser:
    """The command line of the step2 script for ``kind`` ("image" or "text")."""
    kind = Modality(kind)
    default = get_score(DEFAULT[kind])
    what = "page images" if kind == Modality.IMAGE else "the context as plain text (no image)"
    scores = ", ".join(s.name for s in all_scores().values() if s.modality == kind)
    parser = Parser(
        description=f"Step 2: score every decoder head (--score: {scores}; default {default.name}). Feeds each step1 "
        f"sample as {what} plus the question, decodes greedily, and records per head what the score reads (the "
        "argmax of the attention row that produced each answer token, and for prefill scores selected prefill "
        "rows), never output_attentions: memory flat in sequence length.",
        epilog=f"Writes OUT/{kind}/NAME_{default.tag}.json ({{\"l0_h0\": [values...]}}), NAME_{default.tag}_mean.json, "
        f"NAME_{default.tag}.meta.json and the per-sample log NAME_{default.tag}.samples.jsonl (generated text, "
        f"recall, hits); {default.tag} is the {default.name} score's file tag, another --score writes its own tag "
        "instead. NAME is the last component of --model_id (NAME-TAG with --tag). Rerunning the same command resumes; "
        "writing into scores made from other data or settings, or by another model of the same name (a "
        "fingerprint of its config and weights files, not its path), is refused (use --tag or another --out), "
        "and so is a second process writing the same scores (a .lock file beside them; --wait queues behind "
        "it). Exit status 3: the run wrote what it scored but some samples failed (named on the last line), "
        "or no answer token was ever scored; 130: interrupted (rerun to resume).",
    )
    parser.add_argument("--score", nargs="*", default=[default.name], action=ScoreChoice, metavar="NAME",
                        help=f"the head score (default {default.name}); several names, or {ALL} (every registered "
                        f"{kind} score that implements --alignment), score them all in one pass: each sample is "
                        "generated once and each score writes its own files, the same bytes a run of that score "
                        "alone writes (a rerun with a different set resumes each score's own log: samples that "
                        "some listed score still lacks are generated again, for those scores only); --score alone "
                        "lists the registered ones")
    add_model_args(parser)
    default_data = [DEFAULT_OUT["passkey"], DEFAULT_OUT["niah"]]
    parser.add_argument("--data", nargs="+", type=Path, default=default_data, metavar="DIR",
                        help="step1 output dir(s) holding samples.jsonl; several are scored as one run (default: "
                        f"{' '.join(map(str, default_data))}, step1's default outputs: passkey and NIAH, as the "
                        "authors' step2 scores both)")
    parser.add_argument("--out", default=Path("scores"), type=Path, help="scores root (default: scores)")
    parser.add_argument("--n", type=positive_int, default=None,
                        help=count_help("per --data dir (the first N of DIR/samples.jsonl)", None))
    parser.add_argument("--restrict_to_n", action="store_true",
                        help="write the score files over the first --n samples only, even when the per-sample log "
                        "holds more from an earlier, larger run (by default those are kept, and a line says so)")
    parser.add_argument("--max_new_tokens", type=positive_int, default=32,
                        help="greedy decoding length (default 32)")
    parser.add_argument("--tag", default=None,
                        help="name these scores NAME-TAG: keeps runs on other data or settings apart")
    parser.add_argument("--alignment", choices=rules.ALIGNMENTS, default=Alignment.PRODUCE.value,
                        help="produce: the row that produced each token (default); authors: the released rule")
    parser.add_argument("--shard", default=None, help="i/n: score every n-th sample starting at i (0-based)")
    parser.add_argument("--merge", action="store_true", help="only merge existing (shard) logs into score files")
    parser.add_argument("--wait", action="store_true",
                        help="if another process is writing the same scores, wait for it instead of refusing")
    parser.add_argument("--verify-eager", action="store_true",
                        help="re-run the first scored sample with eager attention + output_attentions and fail "
                        "if any recorded argmax differs")
    parser.add_argument("--batch_size", type=positive_int, default=1,
                        help="samples generated together (left-padded; scores equal --batch_size 1; default 1)")
    if kind == Modality.IMAGE:
        parser.add_argument("--overlap", type=float, default=None,
                            help="a tile covers a character when it holds more than this fraction of its box "
                            f"(default {DEFAULT_OVERLAP}; with --alignment authors the released {AUTHORS_OVERLAP}, "
                            "i.e. 0.1 percent, on int-truncated resized coordinates)")
        parser.add_argument("--fine_grained", action="store_true",
                            help="accepted for the authors' commands: one event per answer character against "
                            "that character's tiles, their fine-grained mode, is the only mode here (always on)")
    return parser


def main(kind: str, argv: list[str] | None = None) -> int:
    """``step2_ocr_retrieval_head.py`` (``kind`` "image") and ``step2_text_retrieval_head.py`` ("text")."""
    args = build_parser(kind).parse_args(argv)
    setup_logging()
    return run_cli(_main, Modality(kind), args)


def data_fingerprints(data: list[Path]) -> str | list[str | None] | None:
    """The content fingerprint of one step1 folder, or one per folder of a run over several."""
    fingerprints = [data_fingerprint(path) for path in data]
    return fingerprints[0] if len(fingerprints) == 1 else fingerprints


def scored_order(data: list[Path], order: list[str], logs: list[Path], restrict: bool) -> list[str]:
    """The samples the score files are written over: the ones selected (``order``, the first --n), plus
    those an earlier run with a larger --n scored into the same logs, unless ``restrict``. A smaller --n
    must not silently shrink the scores; the extra samples keep their place in the data's order."""
    selected = set(order)
    logged = {record["id"] for log in logs for record in read_jsonl(log) if "error" not in record}
    everything = [record["id"] for folder in data for record in read_jsonl(Path(folder) / SAMPLES_FILE)]
    extra = [sample_id for sample_id in everything if sample_id in logged and sample_id not in selected]
    if not extra:
        return order
    if restrict:
        logger.info("--restrict_to_n: the score files are written over the %d selected samples; the log keeps %d "
                    "more scored by an earlier run", len(order), len(extra))
        return order
    logger.info("--n selects %d samples, but the log holds %d more scored by an earlier run: the score files keep "
                "all %d (pass --restrict_to_n to write them over the selected samples only)", len(order), len(extra),
                len(order) + len(extra))
    kept = selected | set(extra)
    return [sample_id for sample_id in everything if sample_id in kept]


def run_identity(kind: Modality, args: argparse.Namespace, model: str, cfg: Step2Config,
                 fingerprint: str | None = None) -> dict:
    """What the scores of one output stem are made from; a resumed run must match it. The model is pinned by
    the fingerprint of its files (``model`` is only its short name: two checkpoints can share it)."""
    identity = {"kind": kind, "model": model, **({MODEL_KEY: fingerprint} if fingerprint else {}),
                "data": "+".join(Path(d).resolve().name for d in args.data),
                "data_fingerprint": data_fingerprints(args.data), "alignment": cfg.alignment,
                "max_new_tokens": cfg.max_new_tokens}
    return {**identity, **given_settings(args)}


def given_settings(args: argparse.Namespace) -> dict:
    """The optional settings a run was given (tile overlap, family knobs, protocol): part of its identity only
    when given, so outputs made before a setting existed still resume."""
    return {key: getattr(args, key) for key in ("overlap", *knob_names(), "protocol")
            if getattr(args, key, None) is not None}


def _main(kind: Modality, args: argparse.Namespace) -> int:
    cfg = Step2Config(kind, args.max_new_tokens, args.alignment, getattr(args, "overlap", None), args.score)
    check_score(cfg)
    if ALL in args.score:
        left_out = [score.name for score in of_modality(kind) if score.name not in cfg.score]
        if left_out:
            logger.info("--score %s: %s left out (not implementing --alignment %s)", ALL, ", ".join(left_out),
                        cfg.alignment)
    shard = Shard.parse(args.shard)
    out_dir = ensure_writable_dir(args.out / kind)
    samples = load_sample_dirs(args.data, args.n)
    adapter = load_adapter(args.model_id, **adapter_kwargs(args, shard.device_map()))
    args.protocol = adapter.protocol  # the resolved one (given, declared or the default) keys the run
    name = f"{adapter.name}-{args.tag}" if args.tag else adapter.name
    stems = {score.name: score_stem(name, score) for score in cfg.head_scores}
    fingerprint = model_fingerprint(args.model_id)
    for stem in stems.values():
        # One writer per output stem: a second process on the same scores is refused (or waits), never interleaves.
        # (Each shard of a sharded run has its own log, so its own lock: shards run side by side.)
        lock_output(out_dir / shard.log_name(stem).replace(".samples.jsonl", ".lock"), args.wait)
    for stem in stems.values():  # every score's output is checked before anything is scored
        claim(out_dir / f"{stem}.run.json", run_identity(kind, args, adapter.name, cfg, fingerprint),
              str(out_dir / stem), "pass --tag NAME (scores NAME-TAG) or another --out to keep both",
              recorded={"model_source": model_origin(args.model_id)})
    info = {"model": adapter.name, "model_id": args.model_id, MODEL_KEY: fingerprint,
            "num_layers": adapter.shape.num_layers, "num_heads": adapter.shape.num_heads,
            "num_kv_heads": adapter.shape.num_kv_heads,
            # Layers without attention rows (linear attention): their heads have no events in the score file.
            "not_scoreable_layers": [layer for layer in range(adapter.shape.num_layers)
                                     if layer not in adapter.scoreable_layers]}
    if kind == Modality.IMAGE:
        info["protocol"] = adapter.settings()
    if args.tag:
        info["tag"] = args.tag
    note = model_note(adapter.model.config, args.model_id)
    if note:
        info["warning"] = note
        logger.warning("%s: %s", args.model_id, note)
    order = [s.id for s in samples]
    if not args.merge:
        logs = {score: out_dir / shard.log_name(stem) for score, stem in stems.items()}
        failed = _score(adapter, samples, shard, cfg, logs, args.verify_eager, args.batch_size)
        if shard.launched:
            # accelerate/torchrun: every process scored its share; the main one merges once all are done.
            shard.wait_for_all()
            if shard.index != 0:
                return 0
        elif shard.count > 1:
            logger.info("shard %d/%d done; merge with the same command plus --merge", shard.index, shard.count)
            return 1 if failed == len(shard.select(samples)) else 0
    problems = [_write_score(out_dir, stem, info, cfg, args, order, adapter, get_score(score))
                for score, stem in stems.items()]
    first = next((problem for problem in problems if problem is not None), None)
    if first is not None:  # every score's files are written before the run reports what went wrong
        raise first
    return 0


def _write_score(out_dir: Path, stem: str, info: dict, cfg: Step2Config, args: argparse.Namespace,
                 order: list[str], adapter: ModelAdapter, score: HeadScore) -> Exception | None:
    """Write one score's files from its logs and say what is wrong with them: the error the run ends with (failed
    samples, or no answer token ever scored), or None."""
    order = scored_order(args.data, order, shard_logs(out_dir, stem), args.restrict_to_n)
    scored, failed, events = write_scores(out_dir, stem, info, cfg, args.data, order, score)
    logger.info("%d samples scored, %d failed, %d answer-token events -> %s", scored, failed, events,
                out_dir / f"{stem}.json")
    if failed:
        return FailedSamplesError(failed_summary(out_dir, stem, order, scored))
    if events == 0:
        empty = (f"{out_dir / stem}.json holds no answer-token events: the model never wrote the answer in {scored} "
                 f"samples (see 'generated' in {stem}.samples.jsonl)")
        if getattr(adapter.model.config, "ocr_heads_random_weights", False):
            # A model built with random weights is not expected to answer: the run did what it could.
            logger.warning("%s, as expected of a model with random weights", empty)
            return None
        return EmptyRunError(f"{empty}. Likely causes: {likely_causes(cfg.kind, adapter, cfg.max_new_tokens)}")
    warning = silent_zero_warning(load_scores(out_dir / f"{stem}.json"))
    if warning:
        logger.warning("%s. Likely causes: %s", warning, likely_causes(cfg.kind, adapter, cfg.max_new_tokens))
    return None


def silent_zero_warning(scores: ScoreFile) -> str | None:
    """What makes a finished run's scores say nothing (no answer read anywhere, or every head 0), else None."""
    n = scores.meta.get("n_samples")
    if scores.meta.get("mean_recall") == 0:
        return f"no sample's answer was read: recall 0 in all {n} samples"
    if not any(scores.means.values()):
        return f"every head scores 0 over {n} samples"
    return None


def likely_causes(kind: Modality, adapter: ModelAdapter, max_new_tokens: int) -> str:
    """Why a model reads no answer, most likely first, with the flag to try."""
    causes = []
    if getattr(adapter.config, "ocr_heads_random_weights", False):
        causes.append("the model has random weights")
    if kind == Modality.IMAGE:
        # The trap: a model trained on pages at another resolution misreads the pages a protocol rescales.
        other = NATIVE if adapter.protocol == PAPER else PAPER
        causes.append(f"the page protocol {adapter.protocol} ({adapter.protocol_source}) shows the model pages at a "
                      f"resolution it was not trained on: try --protocol {other}")
    causes.append(f"a wrong chat template, --max_new_tokens too small ({max_new_tokens}), or a model that does not "
                  "answer")
    return "; ".join(causes)


def failed_summary(out_dir: Path, stem: str, order: list[str], scored: int) -> str:
    """The one line that ends a run with failed samples: which ones, where their errors are, what was kept."""
    _, failed = collect(shard_logs(out_dir, stem), order)
    ids = [record["id"] for record in failed]
    shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
    kept = (f"{out_dir / stem}.json holds the {scored} scored samples" if scored
            else "no score file was written")
    return (f"{len(ids)} of {len(ids) + scored} samples failed ({shown}); their errors are in the 'error' field of "
            f"{out_dir / stem}.samples.jsonl; {kept}. Fix them and rerun the same command: it scores only those")


def check_score(cfg: Step2Config) -> None:
    """The scores must read what this script feeds (pages or text) and implement the alignment rule."""
    scores = cfg.head_scores
    if not scores:
        raise ValueError(f"--score {ALL}: no {cfg.kind} score implements --alignment {cfg.alignment}")
    modalities = {score.modality for score in scores}
    if len(modalities) > 1:
        named = ", ".join(f"{score.name} ({score.modality})" for score in scores)
        raise ValueError(f"scores {named} read different forms of a sample: one run scores one modality "
                         "(image: step2_ocr_retrieval_head.py, text: step2_text_retrieval_head.py)")
    for score in scores:
        if score.modality != cfg.kind:
            script = ("step2_ocr_retrieval_head.py" if score.modality == Modality.IMAGE
                      else "step2_text_retrieval_head.py")
            raise ValueError(f"score {score.name} reads the {score.modality} form of a sample: run it with {script}")
    from ocr_heads.pipeline.sample_scoring import check_settings

    for score in scores:
        check_settings(score, cfg.settings)


def _score(adapter: ModelAdapter, samples: list[Sample], shard: Shard, cfg: Step2Config, logs: dict[str, Path],
           verify: bool, batch_size: int = 1) -> int:
    """Score the shard's samples not yet in every score's log, each generated once for all the run's scores;
    returns the samples that failed."""
    from ocr_heads.attention import capture, verify_against_eager
    from ocr_heads.pipeline.sample_scoring import score_batch_scores

    verified = not verify
    with capture(adapter) as recorder:
        def process(batch: list[Sample]) -> list[dict | Exception]:
            nonlocal verified
            outcomes = score_batch_scores(adapter, recorder, batch, cfg.head_scores, cfg.settings,
                                          cfg.max_new_tokens)
            for sample, outcome in zip(batch, outcomes, strict=True):
                done = [] if isinstance(outcome, Exception) else [r for r in outcome.values()
                                                                  if not isinstance(r, Exception)]
                if verified or not done:
                    continue
                mismatches = verify_against_eager(adapter, done[0].inputs, done[0].generated, done[0].record)
                if mismatches:
                    raise SystemExit(f"error: --verify-eager: {len(mismatches)} argmax differ from eager, first: "
                                     f"{mismatches[0]}")
                logger.info("--verify-eager: sample %s matches eager attention on every head and step (%s, "
                            "ties within its rounding tolerance allowed)", sample.id, adapter.model.dtype)
                verified = True
            return [o if isinstance(o, Exception) else
                    {name: r if isinstance(r, Exception) else r.log_record() for name, r in o.items()}
                    for o in outcomes]

        _, failed = run_batches_to_logs(shard.select(samples), lambda s: s.id, process, logs, f"step2 {cfg.kind}",
                                        batch_size)
    return failed
