"""Step 2: score every decoder head by OCR (image) or retrieval (text) behaviour.

``score_image_sample`` / ``score_text_sample`` turn one step1 sample into per-head values; ``main``
is the command line shared by ``step2_ocr_retrieval_head.py`` and ``step2_text_retrieval_head.py``.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import transformers

import ocr_heads
from ocr_heads import scoring
from ocr_heads.attention import AttentionRecorder, capture, verify_against_eager
from ocr_heads.data.samples import Sample, load_sample_dirs
from ocr_heads.data.step1 import DEFAULT_OUT
from ocr_heads.geometry import DEFAULT_OVERLAP
from ocr_heads.heads import all_heads
from ocr_heads.io import ensure_writable_dir
from ocr_heads.models import ModelAdapter, ModelInputs, load_adapter
from ocr_heads.runner import Shard, collect, run_samples, shard_logs
from ocr_heads.scorefile import save_scores

logger = logging.getLogger(__name__)

KINDS = {"image": ("ocr", "fg"), "text": ("retrieval", "te")}


@dataclass(frozen=True)
class Step2Config:
    kind: str  # "image" or "text"
    max_new_tokens: int = 32
    alignment: str = "produce"
    overlap: float = DEFAULT_OVERLAP


def generated_pieces(adapter: ModelAdapter, generated: list[int]) -> list[str]:
    """The text each generated token adds (incremental decoding keeps multi-byte characters whole)."""
    pieces, previous = [], ""
    for k in range(len(generated)):
        text = adapter.decode(generated[: k + 1])
        pieces.append(text[len(previous) :] if text.startswith(previous) else text)
        previous = text
    return pieces


def _generate(adapter: ModelAdapter, recorder: AttentionRecorder, inputs: ModelInputs, cfg: Step2Config,
              prompt_rows: list[int] | None = None) -> tuple[list[int], torch.Tensor]:
    recorder.reset(inputs.prompt_length, prompt_rows)
    generated = adapter.generate(inputs, cfg.max_new_tokens)
    return generated, recorder.result().argmax


def score_image_sample(adapter: ModelAdapter, recorder: AttentionRecorder, sample: Sample, cfg: Step2Config) -> dict:
    inputs = adapter.image_inputs(sample.load_pages(), sample.question)
    generated, argmax = _generate(adapter, recorder, inputs, cfg)
    answer_ids = adapter.tokenizer(sample.answer, add_special_tokens=False)["input_ids"]
    sample_recall = scoring.recall(answer_ids, generated)
    if cfg.alignment == "authors":
        # Released rule: any generated token whose id is in the answer is an event, paired in order with the
        # answer characters.
        answer_set = set(answer_ids)
        tokens = [i for i, t in enumerate(generated) if t in answer_set]
        answer_tokens = [scoring.AnswerToken(i, (k, k + 1)) for k, i in enumerate(tokens[: len(sample.answer)])]
    else:
        answer_tokens = scoring.align_answer_tokens(generated_pieces(adapter, generated), sample.answer)
    targets = scoring.char_targets(sample.all_evidence(), inputs.image_tokens, cfg.overlap)
    values = scoring.ocr_values(argmax, answer_tokens, targets, sample_recall, cfg.alignment)
    return {
        "generated": adapter.decode(generated),
        "recall": sample_recall,
        "events": len(values),
        "hits": int((values > 0).sum()),
        "values": values.reshape(len(values), argmax.shape[1] * argmax.shape[2]).round(6).tolist(),
        "_inputs": inputs,
        "_generated_ids": generated,
    }


def score_text_sample(adapter: ModelAdapter, recorder: AttentionRecorder, sample: Sample, cfg: Step2Config) -> dict:
    inputs = adapter.text_inputs(sample.context, sample.question)
    prompt_ids = inputs.input_ids[0].tolist()
    answer_ids = adapter.tokenizer(sample.answer, add_special_tokens=False)["input_ids"]
    if cfg.alignment == "authors":
        rows = [p for p, t in enumerate(prompt_ids) if t in set(answer_ids)]
        generated, argmax = _generate(adapter, recorder, inputs, cfg, prompt_rows=rows)
        value = scoring.retrieval_value_authors(recorder.prompt_argmax(), argmax, prompt_ids, generated, answer_ids)
        events = len(rows) + sum(t in set(answer_ids) for t in generated[:-1])
    else:
        if sample.needle_span is None:
            raise ValueError(f"sample {sample.id} has no needle_span (needed for the retrieval score)")
        generated, argmax = _generate(adapter, recorder, inputs, cfg)
        answer_tokens = scoring.align_answer_tokens(generated_pieces(adapter, generated), sample.answer)
        needle = set(inputs.context_tokens(*sample.needle_span))
        value = scoring.retrieval_value(argmax, prompt_ids, generated, answer_tokens, needle)
        events = len(answer_tokens)
    return {
        "generated": adapter.decode(generated),
        "recall": scoring.recall(answer_ids, generated),
        "events": events,
        "hits": int((value > 0).sum()),
        "values": [value.reshape(-1).round(6).tolist()],
        "_inputs": inputs,
        "_generated_ids": generated,
    }


SCORERS = {"image": score_image_sample, "text": score_text_sample}


def per_head_lists(records: list[dict], heads: list[str]) -> dict[str, list[float]]:
    """Concatenate every sample's rows (events for OCR, one row for retrieval) into per-head lists."""
    rows = [row for record in records for row in record["values"]]
    matrix = np.asarray(rows, dtype=np.float64).reshape(len(rows), len(heads))
    return {head: matrix[:, i].tolist() for i, head in enumerate(heads)}


def _git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def write_scores(out_dir: Path, stem: str, adapter_info: dict, cfg: Step2Config, data: list[Path],
                 order: list[str]) -> tuple[int, int]:
    """Merge every log of the run (single or shards) into the score files; returns (scored, failed)."""
    records, failed = collect(shard_logs(out_dir, stem), order)
    heads = all_heads(adapter_info["num_layers"], adapter_info["num_heads"])
    kind, _ = KINDS[cfg.kind]
    meta = {
        "kind": kind,
        **adapter_info,
        "data": str(data[0]) if len(data) == 1 else [str(path) for path in data],
        "n_samples": len(records),
        "n_failed": len(failed),
        "n_events": sum(r["events"] for r in records),
        "alignment": cfg.alignment,
        "overlap_threshold": cfg.overlap if cfg.kind == "image" else None,
        "max_new_tokens": cfg.max_new_tokens,
        "mean_recall": float(np.mean([r["recall"] for r in records])) if records else None,
        "versions": {"ocr_heads": ocr_heads.__version__, "torch": torch.__version__.split("+")[0],
                     "transformers": transformers.__version__},
        "git_sha": _git_sha(),
    }
    if records:
        save_scores(out_dir / f"{stem}.json", per_head_lists(records, heads), meta)
    return len(records), len(failed)


def build_parser(kind: str) -> argparse.ArgumentParser:
    label, suffix = KINDS[kind]
    what = "page images" if kind == "image" else "the context as plain text (no image)"
    parser = argparse.ArgumentParser(
        description=f"Step 2: {label} score of every decoder head. Feeds each step1 sample as {what} plus the "
        "question, decodes greedily, and records per head the argmax of the attention row that produced each "
        "answer token (no output_attentions, memory flat in sequence length).",
        epilog=f"Writes OUT/{kind}/NAME_{suffix}.json ({{\"l0_h0\": [values...]}}), NAME_{suffix}_mean.json, "
        f"NAME_{suffix}.meta.json and the per-sample log NAME_{suffix}.samples.jsonl (generated text, recall, "
        "hits). NAME is the last component of --model_id. Rerunning the same command resumes.",
    )
    parser.add_argument("--model_id", required=True, help="hub id (e.g. Qwen/Qwen2-VL-2B-Instruct) or local dir")
    default_data = [DEFAULT_OUT["passkey"], DEFAULT_OUT["niah"]]
    parser.add_argument("--data", nargs="+", type=Path, default=default_data, metavar="DIR",
                        help="step1 output dir(s) holding samples.jsonl; several are scored as one run (default: "
                        f"{' '.join(map(str, default_data))}, step1's default outputs: passkey and NIAH, as the "
                        "authors' step2 scores both)")
    parser.add_argument("--out", default=Path("scores"), type=Path, help="scores root (default: scores)")
    parser.add_argument("--n", type=int, default=None, help="score only the first N samples of each --data dir")
    parser.add_argument("--max_new_tokens", type=int, default=32, help="greedy decoding length (default 32)")
    parser.add_argument("--alignment", choices=scoring.ALIGNMENTS, default="produce",
                        help="produce: the row that produced each token (default); authors: the released rule")
    parser.add_argument("--shard", default=None, help="i/n: score every n-th sample starting at i (0-based)")
    parser.add_argument("--merge", action="store_true", help="only merge existing (shard) logs into score files")
    parser.add_argument("--verify-eager", action="store_true",
                        help="re-run the first scored sample with eager attention + output_attentions and fail "
                        "if any recorded argmax differs")
    parser.add_argument("--dtype", default=None, help="torch dtype (default: auto on GPU, float32 on CPU)")
    parser.add_argument("--device_map", default=None, help='e.g. "auto" to spread a large model over GPUs')
    if kind == "image":
        parser.add_argument("--overlap", type=float, default=DEFAULT_OVERLAP,
                            help="a tile covers a character when it holds more than this fraction of its box")
        parser.add_argument("--fine_grained", action="store_true",
                            help="accepted for the authors' commands: one event per answer character against "
                            "that character's tiles, their fine-grained mode, is the only mode here (always on)")
        parser.add_argument("--min_pixels", type=int, default=None, help="image processor min pixels")
        parser.add_argument("--max_pixels", type=int, default=None, help="image processor max pixels")
        parser.add_argument("--max_patches", type=int, default=None,
                            help="InternVL: most 448 px tiles per page (default: the checkpoint's)")
    return parser


def main(kind: str, argv: list[str] | None = None) -> int:
    args = build_parser(kind).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        shard = Shard.parse(args.shard)
        out_dir = ensure_writable_dir(args.out / kind)
        samples = load_sample_dirs(args.data, args.n)
        adapter_kwargs = {"dtype": getattr(torch, args.dtype) if args.dtype else None,
                          "device_map": args.device_map or shard.device_map()}
        for key in ("min_pixels", "max_pixels", "max_patches"):
            if getattr(args, key, None):
                adapter_kwargs[key] = getattr(args, key)
        adapter = load_adapter(args.model_id, **adapter_kwargs)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    cfg = Step2Config(kind, args.max_new_tokens, args.alignment, getattr(args, "overlap", DEFAULT_OVERLAP))
    stem = f"{adapter.name}_{KINDS[kind][1]}"
    info = {"model": adapter.name, "model_id": args.model_id, "num_layers": adapter.shape.num_layers,
            "num_heads": adapter.shape.num_heads, "num_kv_heads": adapter.shape.num_kv_heads}
    if getattr(adapter.model.config, "ocr_heads_random_weights", False):
        info["warning"] = "random weights: these scores are noise, not findings"
        logger.warning("%s has random weights: its scores are noise, not findings", args.model_id)
    order = [s.id for s in samples]
    if not args.merge:
        failed = _score(adapter, samples, shard, cfg, out_dir / shard.log_name(stem), args.verify_eager)
        if shard.launched:
            # accelerate/torchrun: every process scored its share; the main one merges once all are done.
            shard.wait_for_all()
            if shard.index != 0:
                return 0
        elif shard.count > 1:
            logger.info("shard %d/%d done; merge with the same command plus --merge", shard.index, shard.count)
            return 1 if failed == len(shard.select(samples)) else 0
    scored, failed = write_scores(out_dir, stem, info, cfg, args.data, order)
    logger.info("%d samples scored, %d failed -> %s", scored, failed, out_dir / f"{stem}.json")
    if failed:
        logger.warning("%d samples failed; their errors are in %s", failed, out_dir / f"{stem}.samples.jsonl")
    return 1 if scored == 0 else 0


def _score(adapter: ModelAdapter, samples: list[Sample], shard: Shard, cfg: Step2Config, log: Path,
           verify: bool) -> int:
    scorer = SCORERS[cfg.kind]
    verified = not verify
    with capture(adapter) as recorder:
        def process(sample: Sample) -> dict:
            nonlocal verified
            record = scorer(adapter, recorder, sample, cfg)
            inputs, generated = record.pop("_inputs"), record.pop("_generated_ids")
            if not verified:
                mismatches = verify_against_eager(adapter, inputs, generated, recorder.result())
                if mismatches:
                    raise SystemExit(f"--verify-eager: {len(mismatches)} argmax differ from eager, first: "
                                     f"{mismatches[0]}")
                logger.info("--verify-eager: sample %s matches eager attention on every head and step (%s, ties "
                            "within its rounding tolerance allowed)", sample.id, adapter.model.dtype)
                verified = True
            return record

        _, failed = run_samples(shard.select(samples), lambda s: s.id, process, log, f"step2 {cfg.kind}")
    return failed
