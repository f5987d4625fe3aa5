"""Case study (exp_case): do the same heads read every character?

Single-character passkeys over 0-9a-z (``step1_passkey.py --single-char``), each sample scored
exactly as step2's OCR score (``ocr_heads.step2.score_batch``); the per-event values are
then averaged per character instead of over the whole set. Output::

    OUT/case/NAME_case.json       {"model": NAME, "chars": {"0": {"l0_h0": score, ...}, ...}}
    OUT/case/NAME_case.meta.json  samples / events per character, failures, settings
    OUT/case/NAME_case.samples.jsonl  per-sample log (a rerun resumes)
"""

from __future__ import annotations

import argparse
import logging
import string
from collections import defaultdict
from pathlib import Path

import numpy as np

from ocr_heads import scoring
from ocr_heads.attention import capture
from ocr_heads.data.samples import Sample, load_samples
from ocr_heads.geometry import DEFAULT_OVERLAP
from ocr_heads.heads import all_heads
from ocr_heads.io import write_json_atomic
from ocr_heads.models import ModelAdapter, load_adapter
from ocr_heads.models.options import adapter_kwargs, add_model_args
from ocr_heads.runner import collect, run_batches

logger = logging.getLogger(__name__)

CHARS = string.digits + string.ascii_lowercase
DEFAULT_PER_CHAR = 100


def samples_by_char(samples: list[Sample], per_char: int | None) -> dict[str, list[Sample]]:
    """The first ``per_char`` samples of each character of 0-9a-z, in CHARS order."""
    grouped: dict[str, list[Sample]] = defaultdict(list)
    skipped = 0
    for sample in samples:
        if len(sample.answer) != 1 or sample.answer not in CHARS:
            skipped += 1
            continue
        if per_char is None or len(grouped[sample.answer]) < per_char:
            grouped[sample.answer].append(sample)
    if skipped:
        logger.warning("skipped %d samples whose answer is not one character of 0-9a-z "
                       "(generate the data with step1_passkey.py --single-char)", skipped)
    if not grouped:
        raise ValueError("no single-character passkey samples (run step1_passkey.py --single-char)")
    missing = [char for char in CHARS if char not in grouped]
    if missing:
        logger.warning("no samples for %d characters: %s", len(missing), "".join(missing))
    return {char: grouped[char] for char in CHARS if char in grouped}


def char_maps(records: list[dict], chars: dict[str, list[Sample]], heads: list[str]) -> tuple[dict, dict]:
    """Per character, the mean over all its answer-token events of each head's value (hit x recall).

    A character whose samples produced no answer-token event (the model never wrote it) gets 0 for
    every head: no head was seen reading it. Returns (maps, events per character).
    """
    by_id = {record["id"]: record for record in records}
    maps, events = {}, {}
    for char, samples in chars.items():
        rows = [row for sample in samples if sample.id in by_id for row in by_id[sample.id]["values"]]
        events[char] = len(rows)
        means = np.asarray(rows, dtype=np.float64).mean(axis=0) if rows else np.zeros(len(heads))
        maps[char] = {head: round(float(value), 6) for head, value in zip(heads, means, strict=True)}
    return maps, events


def build_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        description="Case study: OCR score of every decoder head per passkey character (0-9a-z), scored as "
        "step2 does, to see whether the same heads read every character.",
        epilog="Reads DATA/samples.jsonl from `step1_passkey.py --single-char --n N --out DATA`. Writes "
        'OUT/case/NAME_case.json ({"model": NAME, "chars": {"0": {"l0_h0": score, ...}, ...}}), '
        "NAME_case.meta.json (samples and events per character) and the per-sample log "
        "NAME_case.samples.jsonl; rerunning resumes. NAME is the last component of --model_id.",
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    add_model_args(parser, "Qwen/Qwen2-VL-2B-Instruct")
    parser.add_argument("--data", required=True, type=Path, help="step1 --single-char output dir")
    parser.add_argument("--out", type=Path, default=Path("results"), help="results root (default results/)")
    parser.add_argument("--n", type=int, default=DEFAULT_PER_CHAR,
                        help=f"haystacks per character (default {DEFAULT_PER_CHAR})")
    parser.add_argument("--max_new_tokens", type=int, default=32, help="greedy decoding length (default 32)")
    parser.add_argument("--alignment", choices=scoring.ALIGNMENTS, default="produce",
                        help="which attention row is an event (see step2 --help)")
    parser.add_argument("--overlap", type=float, default=None,
                        help="a tile covers a character when it holds more than this fraction of its box "
                        f"(default {DEFAULT_OVERLAP}; with --alignment authors the released 0.1 percent)")
    parser.add_argument("--batch_size", type=int, default=1,
                        help="samples generated together (left-padded; maps equal --batch_size 1; default 1)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # step2 is imported here: it pulls in the score-file module, needed only for this experiment.
    from ocr_heads.step2 import Step2Config, score_batch

    try:
        if args.n < 1:
            raise ValueError(f"--n must be at least 1, got {args.n}")
        if args.batch_size < 1:
            raise ValueError(f"--batch_size must be at least 1, got {args.batch_size}")
        chars = samples_by_char(load_samples(args.data), args.n)
        adapter = load_adapter(args.model_id, **adapter_kwargs(args))
    except (FileNotFoundError, ValueError) as err:
        logger.error("%s", err)
        return 2
    cfg = Step2Config("image", args.max_new_tokens, args.alignment, args.overlap)
    out_dir = args.out / "case"
    stem = f"{adapter.name}_case"
    samples = [sample for group in chars.values() for sample in group]
    log = out_dir / f"{stem}.samples.jsonl"
    with capture(adapter) as recorder:
        def process(batch: list[Sample]) -> list[dict | Exception]:
            outcomes = score_batch(adapter, recorder, batch, cfg)
            return [outcome if isinstance(outcome, Exception) else {"char": sample.answer, **outcome.log_record()}
                    for sample, outcome in zip(batch, outcomes, strict=True)]

        run_batches(samples, lambda s: s.id, process, log, "case study", args.batch_size)
    records, failed = collect([log], [sample.id for sample in samples])
    if not records:
        logger.error("every sample failed; errors are in %s", log)
        return 1
    return _write(adapter, args, chars, records, failed, out_dir, stem)


def _write(adapter: ModelAdapter, args: argparse.Namespace, chars: dict[str, list[Sample]], records: list[dict],
           failed: list[dict], out_dir: Path, stem: str) -> int:
    heads = all_heads(adapter.shape.num_layers, adapter.shape.num_heads)
    maps, events = char_maps(records, chars, heads)
    silent = [char for char, count in events.items() if count == 0]
    if silent:
        logger.warning("no answer-token events for %s: their maps are all 0", "".join(silent))
    write_json_atomic(out_dir / f"{stem}.json", {"model": adapter.name, "chars": maps}, indent=None)
    meta = {
        "model": adapter.name,
        "model_id": args.model_id,
        "data": str(args.data),
        "samples_per_char": {char: len(group) for char, group in chars.items()},
        "events_per_char": events,
        "chars_without_events": silent,
        "n_failed": len(failed),
        "alignment": args.alignment,
        "overlap_threshold": scoring.overlap_threshold(args.alignment, args.overlap),
        "max_new_tokens": args.max_new_tokens,
        "protocol": adapter.settings(),
    }
    if getattr(adapter.model.config, "ocr_heads_random_weights", False):
        meta["warning"] = "random weights: these maps are noise, not findings"
        logger.warning("%s has random weights: its maps are noise, not findings", args.model_id)
    write_json_atomic(out_dir / f"{stem}.meta.json", meta)
    logger.info("case study: %d characters, %d samples (%d failed) -> %s", len(maps), len(records), len(failed),
                out_dir / f"{stem}.json")
    return 0
