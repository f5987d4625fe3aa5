"""Step 2: score every decoder head by OCR (image) or retrieval (text) behaviour.

``score_batch`` turns step1 samples, generated together, into per-head values
(``score_image_sample`` / ``score_text_sample``: one sample); ``main`` is the command line shared
by ``step2_ocr_retrieval_head.py`` and ``step2_text_retrieval_head.py``.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import transformers

import ocr_heads
from ocr_heads import scoring
from ocr_heads.attention import AttentionRecorder, StepRecord, capture, verify_against_eager
from ocr_heads.caveats import model_note
from ocr_heads.cli import EmptyRunError, Parser, count_help, positive_int, run_cli, setup_logging
from ocr_heads.data.samples import Sample, load_sample_dirs
from ocr_heads.data.step1 import DEFAULT_OUT
from ocr_heads.geometry import AUTHORS_OVERLAP, DEFAULT_OVERLAP
from ocr_heads.heads import all_heads, parse_head
from ocr_heads.identity import claim, data_fingerprint
from ocr_heads.io import ensure_writable_dir
from ocr_heads.models import ModelAdapter, ModelInputs, load_adapter
from ocr_heads.models.base import left_padding
from ocr_heads.models.options import adapter_kwargs, add_model_args
from ocr_heads.runner import SAMPLE_ERRORS, Shard, collect, run_batches, shard_logs
from ocr_heads.scorefile import save_scores

logger = logging.getLogger(__name__)

KINDS = {"image": ("ocr", "fg"), "text": ("retrieval", "te")}


@dataclass(frozen=True)
class Step2Config:
    kind: str  # "image" or "text"
    max_new_tokens: int = 32
    alignment: str = "produce"
    overlap: float | None = None  # None: the rule's own (10% for produce, the released 0.1% for authors)

    @property
    def overlap_threshold(self) -> float:
        return scoring.overlap_threshold(self.alignment, self.overlap)


def generated_pieces(adapter: ModelAdapter, generated: list[int]) -> list[str]:
    """The text each generated token adds (incremental decoding keeps multi-byte characters whole)."""
    pieces, previous = [], ""
    for k in range(len(generated)):
        text = adapter.decode(generated[: k + 1])
        pieces.append(text[len(previous) :] if text.startswith(previous) else text)
        previous = text
    return pieces


def answer_recall(adapter: ModelAdapter, answer: str, generated: list[int], alignment: str) -> float:
    """Recall of the answer in the output. ``authors`` keeps the released rule (the bare answer's ids);
    otherwise the answer counts in whichever tokenization the output has it (leading space or not)."""
    def encode(text: str) -> list[int]:
        return adapter.tokenizer(text, add_special_tokens=False)["input_ids"]

    if alignment == "authors":
        return scoring.recall(encode(answer), generated)
    return scoring.best_recall(scoring.answer_id_variants(encode, answer, adapter.decode(generated)), generated)


@dataclass
class Prepared:
    """One sample's prompt, before generation."""

    sample: Sample
    inputs: ModelInputs
    answer_ids: list[int]
    prompt_rows: list[int]  # prompt positions whose own rows are recorded (authors' text rule), else []


def prepare(adapter: ModelAdapter, sample: Sample, cfg: Step2Config) -> Prepared:
    if cfg.kind == "image":
        inputs = adapter.image_inputs(sample.load_pages(), sample.question)
    else:
        if cfg.alignment != "authors" and sample.needle_span is None:
            raise ValueError(f"sample {sample.id} has no needle_span (needed for the retrieval score)")
        inputs = adapter.text_inputs(sample.context, sample.question)
    answer_ids = adapter.tokenizer(sample.answer, add_special_tokens=False)["input_ids"]
    rows = []
    if cfg.kind == "text" and cfg.alignment == "authors":
        answer_set = set(answer_ids)
        rows = [p for p, t in enumerate(inputs.input_ids[0].tolist()) if t in answer_set]
    return Prepared(sample, inputs, answer_ids, rows)


def generate_recorded(adapter: ModelAdapter, recorder: AttentionRecorder, batch: list[Prepared],
                      cfg: Step2Config) -> list[tuple[list[int], StepRecord]]:
    """Generate the batch's prompts together; per sample its new ids and its own attention record."""
    inputs = [p.inputs for p in batch]
    pads = left_padding(inputs)
    rows = [p.prompt_rows for p in batch] if any(p.prompt_rows for p in batch) else None
    # The released OCR code's argmax leaves out the prompt's last position (see AttentionRecorder.reset).
    exclude_last = cfg.kind == "image" and cfg.alignment == "authors"
    recorder.reset(max(i.prompt_length for i in inputs), rows, pads, exclude_last_prompt=exclude_last)
    generated = adapter.generate_batch(inputs, cfg.max_new_tokens)
    return list(zip(generated, recorder.results([len(g) for g in generated]), strict=True))


def finish_image(adapter: ModelAdapter, prepared: Prepared, generated: list[int], record: StepRecord,
                 cfg: Step2Config) -> dict:
    sample, inputs, answer_ids = prepared.sample, prepared.inputs, prepared.answer_ids
    argmax = record.argmax
    sample_recall = answer_recall(adapter, sample.answer, generated, cfg.alignment)
    if cfg.alignment == "authors":
        # Released rule: any generated token whose id is in the answer is an event, paired in order with the
        # answer characters.
        answer_set = set(answer_ids)
        tokens = [i for i, t in enumerate(generated) if t in answer_set]
        answer_tokens = [scoring.AnswerToken(i, (k, k + 1)) for k, i in enumerate(tokens[: len(sample.answer)])]
    else:
        answer_tokens = scoring.align_answer_tokens(generated_pieces(adapter, generated), sample.answer)
    evidence = scoring.scored_occurrences(sample.all_evidence(), cfg.alignment)
    targets = scoring.char_targets(evidence, inputs.image_tokens, cfg.overlap_threshold, rule=cfg.alignment)
    values = scoring.ocr_values(argmax, answer_tokens, targets, sample_recall, cfg.alignment)
    # The answer characters each event's token spells: lets the case study group any run's events by character.
    event_chars = [sample.answer[slice(*token.chars)]
                   for token, _ in scoring.event_rows(answer_tokens, argmax.shape[0], cfg.alignment)]
    return {
        "generated": adapter.decode(generated),
        "recall": sample_recall,
        "image_tokens": [page.count for page in inputs.image_tokens],
        "events": len(values),
        "hits": int((values > 0).sum()),
        "event_chars": event_chars,
        "values": values.reshape(len(values), argmax.shape[1] * argmax.shape[2]).round(6).tolist(),
    }


def finish_text(adapter: ModelAdapter, prepared: Prepared, generated: list[int], record: StepRecord,
                cfg: Step2Config, prompt_argmax: dict[int, torch.Tensor]) -> dict:
    sample, inputs, answer_ids = prepared.sample, prepared.inputs, prepared.answer_ids
    prompt_ids = inputs.input_ids[0].tolist()
    if cfg.alignment == "authors":
        value = scoring.retrieval_value_authors(prompt_argmax, record.argmax, prompt_ids, generated, answer_ids)
        events = len(prepared.prompt_rows) + sum(t in set(answer_ids) for t in generated[:-1])
    else:
        answer_tokens = scoring.align_answer_tokens(generated_pieces(adapter, generated), sample.answer)
        needle = set(inputs.context_tokens(*sample.needle_span))
        value = scoring.retrieval_value(record.argmax, prompt_ids, generated, answer_tokens, needle)
        events = len(answer_tokens)
    return {
        "generated": adapter.decode(generated),
        "recall": answer_recall(adapter, sample.answer, generated, cfg.alignment),
        "events": events,
        "hits": int((value > 0).sum()),
        "values": [value.reshape(-1).round(6).tolist()],
    }


def score_batch(adapter: ModelAdapter, recorder: AttentionRecorder, samples: list[Sample],
                cfg: Step2Config) -> list[dict | Exception]:
    """Score samples generated together; per sample its record (with ``_inputs``, ``_generated_ids`` and
    ``_record`` for verification) or the error it failed with. Values equal scoring each one alone."""
    outcomes: list[dict | Exception] = []
    prepared: list[Prepared] = []
    for sample in samples:
        try:
            prepared.append(prepare(adapter, sample, cfg))
            outcomes.append({})
        except SAMPLE_ERRORS as err:
            outcomes.append(err)
    results = iter(generate_recorded(adapter, recorder, prepared, cfg) if prepared else [])
    ready = iter(enumerate(prepared))
    for slot, outcome in enumerate(outcomes):
        if isinstance(outcome, Exception):
            continue
        index, item = next(ready)
        generated, record = next(results)
        try:
            if cfg.kind == "image":
                outcome = finish_image(adapter, item, generated, record, cfg)
            else:
                outcome = finish_text(adapter, item, generated, record, cfg, recorder.prompt_argmax(index))
        except SAMPLE_ERRORS as err:
            outcomes[slot] = err
            continue
        outcomes[slot] = {**outcome, "_inputs": item.inputs, "_generated_ids": generated, "_record": record}
    return outcomes


def _score_one(adapter: ModelAdapter, recorder: AttentionRecorder, sample: Sample, cfg: Step2Config) -> dict:
    outcome = score_batch(adapter, recorder, [sample], cfg)[0]
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def score_image_sample(adapter: ModelAdapter, recorder: AttentionRecorder, sample: Sample, cfg: Step2Config) -> dict:
    return _score_one(adapter, recorder, sample, replace(cfg, kind="image"))


def score_text_sample(adapter: ModelAdapter, recorder: AttentionRecorder, sample: Sample, cfg: Step2Config) -> dict:
    return _score_one(adapter, recorder, sample, replace(cfg, kind="text"))


SCORERS = {"image": score_image_sample, "text": score_text_sample}


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
                 order: list[str]) -> tuple[int, int, int]:
    """Merge every log of the run (single or shards) into the score files; returns (scored, failed, events)."""
    records, failed = collect(shard_logs(out_dir, stem), order)
    heads = all_heads(adapter_info["num_layers"], adapter_info["num_heads"])
    kind, _ = KINDS[cfg.kind]
    meta = {
        "kind": kind,
        **adapter_info,
        "data": str(data[0]) if len(data) == 1 else [str(path) for path in data],
        "data_fingerprint": data_fingerprints(data),
        "n_samples": len(records),
        "n_failed": len(failed),
        "n_events": sum(r["events"] for r in records),
        "alignment": cfg.alignment,
        "overlap_threshold": cfg.overlap_threshold if cfg.kind == "image" else None,
        "max_new_tokens": cfg.max_new_tokens,
        "mean_recall": float(np.mean([r["recall"] for r in records])) if records else None,
        **({"image_tokens_per_page": image_token_summary(records)} if cfg.kind == "image" else {}),
        "versions": {"ocr_heads": ocr_heads.__version__, "torch": torch.__version__.split("+")[0],
                     "transformers": transformers.__version__},
        "git_sha": _git_sha(),
    }
    if records:
        save_scores(out_dir / f"{stem}.json",
                    per_head_lists(records, heads, adapter_info.get("not_scoreable_layers", [])), meta)
    return len(records), len(failed), meta["n_events"]


def build_parser(kind: str) -> argparse.ArgumentParser:
    label, suffix = KINDS[kind]
    what = "page images" if kind == "image" else "the context as plain text (no image)"
    parser = Parser(
        description=f"Step 2: {label} score of every decoder head. Feeds each step1 sample as {what} plus the "
        "question, decodes greedily, and records per head the argmax of the attention row that produced each "
        "answer token (no output_attentions, memory flat in sequence length).",
        epilog=f"Writes OUT/{kind}/NAME_{suffix}.json ({{\"l0_h0\": [values...]}}), NAME_{suffix}_mean.json, "
        f"NAME_{suffix}.meta.json and the per-sample log NAME_{suffix}.samples.jsonl (generated text, recall, "
        "hits). NAME is the last component of --model_id (NAME-TAG with --tag). Rerunning the same command resumes; "
        "writing into scores made from other data or settings is refused (use --tag or another --out). Exit "
        "status 3: the run wrote its files but no answer token was ever scored.",
    )
    add_model_args(parser)
    default_data = [DEFAULT_OUT["passkey"], DEFAULT_OUT["niah"]]
    parser.add_argument("--data", nargs="+", type=Path, default=default_data, metavar="DIR",
                        help="step1 output dir(s) holding samples.jsonl; several are scored as one run (default: "
                        f"{' '.join(map(str, default_data))}, step1's default outputs: passkey and NIAH, as the "
                        "authors' step2 scores both)")
    parser.add_argument("--out", default=Path("scores"), type=Path, help="scores root (default: scores)")
    parser.add_argument("--n", type=positive_int, default=None,
                        help=count_help("per --data dir (the first N of DIR/samples.jsonl)", None))
    parser.add_argument("--max_new_tokens", type=positive_int, default=32,
                        help="greedy decoding length (default 32)")
    parser.add_argument("--tag", default=None,
                        help="name these scores NAME-TAG: keeps runs on other data or settings apart")
    parser.add_argument("--alignment", choices=scoring.ALIGNMENTS, default="produce",
                        help="produce: the row that produced each token (default); authors: the released rule")
    parser.add_argument("--shard", default=None, help="i/n: score every n-th sample starting at i (0-based)")
    parser.add_argument("--merge", action="store_true", help="only merge existing (shard) logs into score files")
    parser.add_argument("--verify-eager", action="store_true",
                        help="re-run the first scored sample with eager attention + output_attentions and fail "
                        "if any recorded argmax differs")
    parser.add_argument("--batch_size", type=positive_int, default=1,
                        help="samples generated together (left-padded; scores equal --batch_size 1; default 1)")
    if kind == "image":
        parser.add_argument("--overlap", type=float, default=None,
                            help="a tile covers a character when it holds more than this fraction of its box "
                            f"(default {DEFAULT_OVERLAP}; with --alignment authors the released {AUTHORS_OVERLAP}, "
                            "i.e. 0.1 percent, on int-truncated resized coordinates)")
        parser.add_argument("--fine_grained", action="store_true",
                            help="accepted for the authors' commands: one event per answer character against "
                            "that character's tiles, their fine-grained mode, is the only mode here (always on)")
    return parser


def main(kind: str, argv: list[str] | None = None) -> int:
    args = build_parser(kind).parse_args(argv)
    setup_logging()
    return run_cli(_main, kind, args)


def data_fingerprints(data: list[Path]) -> str | list[str | None] | None:
    """The content fingerprint of one step1 folder, or one per folder of a run over several."""
    fingerprints = [data_fingerprint(path) for path in data]
    return fingerprints[0] if len(fingerprints) == 1 else fingerprints


def run_identity(kind: str, args: argparse.Namespace, model: str, cfg: Step2Config) -> dict:
    """What the scores of one output stem are made from; a resumed run must match it."""
    identity = {"kind": kind, "model": model, "data": "+".join(Path(d).resolve().name for d in args.data),
                "data_fingerprint": data_fingerprints(args.data), "alignment": cfg.alignment,
                "max_new_tokens": cfg.max_new_tokens}
    for key in ("overlap", "min_pixels", "max_pixels", "max_patches", "protocol"):
        if getattr(args, key, None) is not None:
            identity[key] = getattr(args, key)
    return identity


def _main(kind: str, args: argparse.Namespace) -> int:
    shard = Shard.parse(args.shard)
    out_dir = ensure_writable_dir(args.out / kind)
    samples = load_sample_dirs(args.data, args.n)
    adapter = load_adapter(args.model_id, **adapter_kwargs(args, shard.device_map()))
    cfg = Step2Config(kind, args.max_new_tokens, args.alignment, getattr(args, "overlap", None))
    name = f"{adapter.name}-{args.tag}" if args.tag else adapter.name
    stem = f"{name}_{KINDS[kind][1]}"
    claim(out_dir / f"{stem}.run.json", run_identity(kind, args, adapter.name, cfg), str(out_dir / stem),
          "pass --tag NAME (scores NAME-TAG) or another --out to keep both")
    info = {"model": adapter.name, "model_id": args.model_id, "num_layers": adapter.shape.num_layers,
            "num_heads": adapter.shape.num_heads, "num_kv_heads": adapter.shape.num_kv_heads,
            # Layers without attention rows (linear attention): their heads have no events in the score file.
            "not_scoreable_layers": [layer for layer in range(adapter.shape.num_layers)
                                     if layer not in adapter.scoreable_layers]}
    if kind == "image":
        info["protocol"] = adapter.settings()
    if args.tag:
        info["tag"] = args.tag
    note = model_note(adapter.model.config, args.model_id)
    if note:
        info["warning"] = note
        logger.warning("%s: %s", args.model_id, note)
    order = [s.id for s in samples]
    if not args.merge:
        failed = _score(adapter, samples, shard, cfg, out_dir / shard.log_name(stem), args.verify_eager,
                        args.batch_size)
        if shard.launched:
            # accelerate/torchrun: every process scored its share; the main one merges once all are done.
            shard.wait_for_all()
            if shard.index != 0:
                return 0
        elif shard.count > 1:
            logger.info("shard %d/%d done; merge with the same command plus --merge", shard.index, shard.count)
            return 1 if failed == len(shard.select(samples)) else 0
    scored, failed, events = write_scores(out_dir, stem, info, cfg, args.data, order)
    logger.info("%d samples scored, %d failed, %d answer-token events -> %s", scored, failed, events,
                out_dir / f"{stem}.json")
    if failed:
        logger.warning("%d samples failed; their errors are in %s", failed, out_dir / f"{stem}.samples.jsonl")
    if scored == 0:
        return 1
    if events == 0:
        empty = (f"{out_dir / stem}.json holds no answer-token events: the model never wrote the answer in {scored} "
                 f"samples (see 'generated' in {stem}.samples.jsonl)")
        if getattr(adapter.model.config, "ocr_heads_random_weights", False):
            # A model built with random weights is not expected to answer: the run did what it could.
            logger.warning("%s, as expected of a model with random weights", empty)
            return 0
        raise EmptyRunError(f"{empty}. Likely causes: a wrong chat template, --max_new_tokens too small "
                            f"({cfg.max_new_tokens}), or a model that does not answer")
    return 0


def _score(adapter: ModelAdapter, samples: list[Sample], shard: Shard, cfg: Step2Config, log: Path,
           verify: bool, batch_size: int = 1) -> int:
    verified = not verify
    with capture(adapter) as recorder:
        def process(batch: list[Sample]) -> list[dict | Exception]:
            nonlocal verified
            outcomes = score_batch(adapter, recorder, batch, cfg)
            for sample, outcome in zip(batch, outcomes, strict=True):
                if isinstance(outcome, Exception):
                    continue
                inputs, generated = outcome.pop("_inputs"), outcome.pop("_generated_ids")
                record = outcome.pop("_record")
                if not verified:
                    mismatches = verify_against_eager(adapter, inputs, generated, record)
                    if mismatches:
                        raise SystemExit(f"error: --verify-eager: {len(mismatches)} argmax differ from eager, first: "
                                         f"{mismatches[0]}")
                    logger.info("--verify-eager: sample %s matches eager attention on every head and step (%s, "
                                "ties within its rounding tolerance allowed)", sample.id, adapter.model.dtype)
                    verified = True
            return outcomes

        _, failed = run_batches(shard.select(samples), lambda s: s.id, process, log, f"step2 {cfg.kind}", batch_size)
    return failed
