"""Case study (exp_case): do the same heads read every character?

Single-character passkeys over 0-9a-z (``step1_passkey.py --single-char``), each sample scored
exactly as step2's OCR score (``ocr_heads.pipeline.step2.score_batch``); the per-event values are
then averaged per character instead of over the whole set. Or, with ``--from_step2``, the events of
any step2 image run grouped by the character each event reads (no model run). Output::

    OUT/case/NAME_case.json       {"model": NAME, "chars": {"0": {"l0_h0": score, ...}, ...}}
    OUT/case/NAME_case.meta.json  samples / events per character, failures, settings
    OUT/case/NAME_case.samples.jsonl  per-sample log (a rerun resumes)
    OUT/case/NAME_case.run.json       what the log is made from (model fingerprint, data, settings)
"""

from __future__ import annotations

import argparse
import logging
import string
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ocr_heads.core.commandline import Parser, count_help, positive_int, run_cli, setup_logging
from ocr_heads.core.errors import EmptyRunError, FailedSamplesError, UserError
from ocr_heads.core.heads import all_heads
from ocr_heads.core.io import lock_output, read_json, read_jsonl, write_json_atomic
from ocr_heads.core.kinds import Alignment, Modality
from ocr_heads.core.paths import SAMPLE_LOG, SIDECAR, case_file, companion
from ocr_heads.core.provenance import (
    MODEL_KEY,
    claim,
    data_fingerprint,
    model_fingerprint,
    model_note,
    model_origin,
    note_of,
)
from ocr_heads.core.runner import collect, run_batches
from ocr_heads.data.samples import SAMPLES_FILE, Sample, load_samples
from ocr_heads.models import load_adapter, require_pages
from ocr_heads.models.options import adapter_kwargs, add_model_args
from ocr_heads.pipeline import step1
from ocr_heads.pipeline.step2 import given_settings
from ocr_heads.scores import rules
from ocr_heads.scores.geometry import DEFAULT_OVERLAP

if TYPE_CHECKING:
    from ocr_heads.models import ModelAdapter

logger = logging.getLogger(__name__)

CHARS = string.digits + string.ascii_lowercase
DEFAULT_PER_CHAR = 100
# The authors' case study draws its haystacks from the 1k-token passkey contexts (seed 42).
CASE_LENGTHS = (1024,)


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


def maps_from_events(records: list[dict], heads: list[str]) -> tuple[dict, dict, dict]:
    """Per character, the mean value of each head over the events that read it, from any step2 image run.

    ``records`` are a step2 per-sample log's records (``values`` and ``event_chars`` per event); an event
    whose token spells several characters counts for each of them. Returns (maps, events per character,
    samples per character); characters in 0-9a-z order, then any others.
    """
    rows: dict[str, list[list[float]]] = defaultdict(list)
    samples: dict[str, set[str]] = defaultdict(set)
    for record in records:
        if not record["values"]:
            continue  # no answer-token event (step2 then writes no event_chars): nothing read
        if "event_chars" not in record:
            raise ValueError(f"sample {record.get('id')}: the step2 log has no event_chars (written by an older "
                             "version); rerun step2 into a new --out")
        for chars, row in zip(record["event_chars"], record["values"], strict=True):
            for char in dict.fromkeys(chars):
                rows[char].append(row)
                samples[char].add(record["id"])
    order = sorted(rows, key=lambda c: (CHARS.find(c) if c in CHARS else len(CHARS), c))
    maps = {}
    for char in order:
        means = np.asarray(rows[char], dtype=np.float64).mean(axis=0)
        maps[char] = {head: round(float(value), 6) for head, value in zip(heads, means, strict=True)}
    return maps, {c: len(rows[c]) for c in order}, {c: len(samples[c]) for c in order}


def build_parser() -> Parser:
    parser = Parser(
        description="Case study: OCR score of every decoder head per passkey character (0-9a-z), scored as "
        "step2 does, to see whether the same heads read every character. Either runs the model on "
        "single-character passkeys (--data), or groups the events of an existing step2 image run by the "
        "character each event reads (--from_step2; no model needed).",
        epilog="--data reads DATA/samples.jsonl from `step1_passkey.py --single-char --n N --out DATA`; without "
        f"--data or --from_step2, {step1.DEFAULT_OUT['chars']} is used and generated first when absent (N haystacks "
        f"of {CASE_LENGTHS[0]} tokens per character, --seed), as the authors' exp_case.py generates its data. Writes "
        'OUT/case/NAME_case.json ({"model": NAME, "chars": {"0": {"l0_h0": score, ...}, ...}}), '
        "NAME_case.meta.json (samples and events per character) and, with --data, the per-sample log "
        "NAME_case.samples.jsonl (NAME_case.run.json keys it by the model's fingerprint, data and settings); "
        "rerunning resumes, another model of the same name is refused. NAME is the last component of --model_id "
        "(or the step2 run's model).",
    )
    add_model_args(parser, "Qwen/Qwen2-VL-2B-Instruct")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--data", type=Path, default=None,
                        help=f"step1 --single-char output dir (default {step1.DEFAULT_OUT['chars']}, generated "
                        "when absent)")
    source.add_argument("--from_step2", type=Path, metavar="LOG",
                        help="a step2 image run's per-sample log (scores/image/NAME_fg.samples.jsonl)")
    parser.add_argument("--out", type=Path, default=Path("results"), help="results root (default results/)")
    parser.add_argument("--n", type=positive_int, default=DEFAULT_PER_CHAR,
                        help=count_help("per character (haystacks; with --data)", DEFAULT_PER_CHAR))
    parser.add_argument("--seed", type=int, default=42,
                        help="seed of the haystacks when the default data is generated (default 42, the authors')")
    parser.add_argument("--fine_grained", action="store_true",
                        help="accepted for the authors' command (their exp_case.py then stores the boxes per "
                        "page); boxes are always stored per page here, so it changes nothing")
    parser.add_argument("--max_new_tokens", type=positive_int, default=32, help="greedy decoding length (default 32)")
    parser.add_argument("--alignment", choices=rules.ALIGNMENTS, default=Alignment.PRODUCE.value,
                        help="which attention row is an event (see step2 --help)")
    parser.add_argument("--overlap", type=float, default=None,
                        help="a tile covers a character when it holds more than this fraction of its box "
                        f"(default {DEFAULT_OVERLAP}; with --alignment authors the released 0.1 percent)")
    parser.add_argument("--batch_size", type=positive_int, default=1,
                        help="samples generated together (left-padded; maps equal --batch_size 1; default 1)")
    parser.add_argument("--wait", action="store_true",
                        help="if another process is writing the same case study, wait for it instead of refusing")
    return parser


def case_data(data: Path | None, per_char: int, seed: int, lengths: tuple[int, ...] = CASE_LENGTHS) -> Path:
    """``--data``, or the default folder, generated first when it holds no samples (a given --data is never
    generated into: a mistyped path should fail, not start a long rendering job)."""
    if data is not None:
        return data
    data = step1.DEFAULT_OUT["chars"]
    if not (data / SAMPLES_FILE).is_file():
        logger.info("no case-study data at %s: generating it (%d haystacks per character)", data, per_char)
        argv = ["--single-char", "--n", str(per_char), "--seed", str(seed), "--out", str(data),
                "--lengths", *map(str, lengths)]
        step1.run("passkey", step1.build_parser("passkey", "case-study data").parse_args(argv))
    return data


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    return run_cli(_from_step2 if args.from_step2 else _run, args)


def _from_step2(args: argparse.Namespace) -> int:
    log = args.from_step2
    if not log.is_file():
        raise FileNotFoundError(f"no step2 per-sample log at {log}")
    meta_path = companion(log, SIDECAR)
    if not meta_path.is_file():
        raise FileNotFoundError(f"no {meta_path.name} next to {log}: run (or --merge) that step2 run first")
    meta = read_json(meta_path)
    if meta.get("kind") != "ocr":
        raise UserError(f"{log} is a {meta.get('kind')} run; the case study needs a step2 image (OCR) run")
    records = [r for r in read_jsonl(log) if "error" not in r]
    heads = all_heads(meta["num_layers"], meta["num_heads"])
    maps, events, per_char = maps_from_events(records, heads)
    if not maps:
        raise EmptyRunError(f"{log} holds no answer-token events: nothing to group by character")
    model = meta["model"]
    write_json_atomic(case_file(args.out, model), {"model": model, "chars": maps}, indent=None)
    case_meta = {"model": model, "source": str(log), "samples_per_char": per_char, "events_per_char": events,
                 "chars_without_events": [c for c in CHARS if c not in maps], "n_samples": len(records),
                 "alignment": meta.get("alignment")}
    if note_of(meta):
        case_meta["warning"] = note_of(meta)
    write_json_atomic(case_file(args.out, model, SIDECAR), case_meta)
    logger.info("case study from %s: %d characters, %d events -> %s", log, len(maps), sum(events.values()),
                case_file(args.out, model))
    return 0


def _run(args: argparse.Namespace) -> int:
    # Imported here: the score-file module and the attention function (torch) are needed only for this run.
    from ocr_heads.attention import capture
    from ocr_heads.pipeline.step2 import Step2Config, score_batch

    require_pages(args.model_id, "exp_case.py")  # before any data is rendered
    args.data = case_data(args.data, args.n, args.seed)
    chars = samples_by_char(load_samples(args.data), args.n)
    adapter = load_adapter(args.model_id, **adapter_kwargs(args))
    cfg = Step2Config(Modality.IMAGE, args.max_new_tokens, args.alignment, args.overlap)
    samples = [sample for group in chars.values() for sample in group]
    log = case_file(args.out, adapter.name, SAMPLE_LOG)
    log.parent.mkdir(parents=True, exist_ok=True)
    lock_output(log.with_name(log.name.replace(".samples.jsonl", ".lock")), args.wait)  # one writer per output
    claim(case_file(args.out, adapter.name, ".run.json"), run_identity(args, adapter.name),
          str(case_file(args.out, adapter.name, "")), "use another --out to keep both",
          recorded={"model_source": model_origin(args.model_id)})
    with capture(adapter) as recorder:
        def process(batch: list[Sample]) -> list[dict | Exception]:
            outcomes = score_batch(adapter, recorder, batch, cfg)
            return [outcome if isinstance(outcome, Exception) else {"char": sample.answer, **outcome.log_record()}
                    for sample, outcome in zip(batch, outcomes, strict=True)]

        run_batches(samples, lambda s: s.id, process, log, "case study", args.batch_size)
    records, failed = collect([log], [sample.id for sample in samples])
    if not records:
        raise UserError(f"every sample failed; errors are in {log}")
    return _write(adapter, args, chars, records, failed)


def run_identity(args: argparse.Namespace, name: str) -> dict:
    """What the per-sample log is made from; a resumed run must match it. The model is pinned by its files'
    fingerprint (its name alone can be shared by two checkpoints); --n may grow."""
    identity = {"model": name, MODEL_KEY: model_fingerprint(args.model_id),
                "data_fingerprint": data_fingerprint(args.data), "alignment": args.alignment,
                "max_new_tokens": args.max_new_tokens}
    return {**identity, **given_settings(args)}


def _write(adapter: ModelAdapter, args: argparse.Namespace, chars: dict[str, list[Sample]], records: list[dict],
           failed: list[dict]) -> int:
    heads = all_heads(adapter.shape.num_layers, adapter.shape.num_heads)
    maps, events = char_maps(records, chars, heads)
    silent = [char for char, count in events.items() if count == 0]
    if silent:
        logger.warning("no answer-token events for %s: their maps are all 0", "".join(silent))
    write_json_atomic(case_file(args.out, adapter.name), {"model": adapter.name, "chars": maps}, indent=None)
    meta = {
        "model": adapter.name,
        "model_id": args.model_id,
        "data": str(args.data),
        "samples_per_char": {char: len(group) for char, group in chars.items()},
        "events_per_char": events,
        "chars_without_events": silent,
        "n_failed": len(failed),
        "alignment": args.alignment,
        "overlap_threshold": rules.overlap_threshold(Alignment(args.alignment), args.overlap),
        "max_new_tokens": args.max_new_tokens,
        "protocol": adapter.settings(),
    }
    note = model_note(adapter.model.config, args.model_id)
    if note:
        meta["warning"] = note
        logger.warning("%s: %s", args.model_id, note)
    write_json_atomic(case_file(args.out, adapter.name, SIDECAR), meta)
    logger.info("case study: %d characters, %d samples (%d failed) -> %s", len(maps), len(records), len(failed),
                case_file(args.out, adapter.name))
    if failed:
        log = case_file(args.out, adapter.name, SAMPLE_LOG)
        raise FailedSamplesError(f"{len(failed)} of {len(failed) + len(records)} samples failed (first: "
                                 f"{failed[0]['id']}); their errors are in {log}; the maps hold the samples "
                                 "that were scored. Rerun the same command to retry them")
    return 0
