"""Benchmark: samples per second of step2 image scoring at batch 1 vs batch 8, and whether scores match.

    python bench/throughput.py [--json] [--n 24] [--repeats 2] [--model models/toy-qwen2-vl]

Scores the same toy passkey samples (pages of 6, 5 and 4 tile rows, so batches are left-padded)
with ``ocr_heads.pipeline.step2.score_batch`` (inputs, capture, generate, per-head values) in one process,
alternating batch 1 and batch 8 ``--repeats`` times after one warm-up batch; the best time of each
is kept (other processes only ever slow a run down). "identical" compares every sample's record
(generated text, recall, per-event values) between the two batch sizes. Prints a table; with
--json the last line is ``{"samples_per_s_b1", "samples_per_s_b8", "batch_speedup", "identical"}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def toy_samples(out: Path, n: int) -> Path:
    """``n`` toy passkey samples, a third each on pages of 6, 5 and 4 tile rows."""
    from ocr_heads.toy.data import TileStyle, write_samples

    per_style = [n - 2 * (n // 3), n // 3, n // 3]
    for rows, count in zip((6, 5, 4), per_style, strict=True):
        if count:
            write_samples(out, count, seed=1000, split=f"rows{rows}", style=TileStyle(rows=rows))
    return out


def score_all(adapter, recorder, samples, cfg, batch_size: int) -> tuple[float, list[dict]]:
    from ocr_heads.pipeline.step2 import score_batch

    records = []
    start = time.perf_counter()
    for i in range(0, len(samples), batch_size):
        for outcome in score_batch(adapter, recorder, samples[i : i + batch_size], cfg):
            if isinstance(outcome, Exception):
                raise outcome
            records.append(outcome.log_record())
    return time.perf_counter() - start, records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "toy-qwen2-vl", help="model dir")
    parser.add_argument("--n", type=int, default=24, help="samples scored at each batch size (default 24)")
    parser.add_argument("--batch_size", type=int, default=8, help="the batched run's size (default 8)")
    parser.add_argument("--max_new_tokens", type=int, default=8, help="greedy decoding length (default 8)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per batch size, best kept (default 2)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TQDM_DISABLE", "1")

    import torch

    from ocr_heads.attention import capture
    from ocr_heads.data.samples import load_samples
    from ocr_heads.models import load_adapter
    from ocr_heads.pipeline.step2 import Step2Config
    from ocr_heads.toy.data import TOY_PROTOCOL

    adapter = load_adapter(str(args.model), protocol=TOY_PROTOCOL)  # the page budget the toy was trained on
    cfg = Step2Config("image", args.max_new_tokens)
    sizes = (1, args.batch_size)
    with tempfile.TemporaryDirectory() as tmp, capture(adapter) as recorder:
        samples = load_samples(toy_samples(Path(tmp), args.n))
        for size in sizes:
            score_all(adapter, recorder, samples[:size], cfg, size)  # warm-up
        best = {size: float("inf") for size in sizes}
        records = {}
        for _ in range(args.repeats):
            for size in sizes:
                seconds, records[size] = score_all(adapter, recorder, samples, cfg, size)
                best[size] = min(best[size], seconds)
    rate = {size: len(samples) / best[size] for size in sizes}
    identical = records[1] == records[args.batch_size]
    print(f"model {args.model.name}, {len(samples)} samples, {args.max_new_tokens} new tokens, "
          f"{torch.get_num_threads()} torch threads, best of {args.repeats}")
    print(f"{'batch':>6} {'seconds':>9} {'samples/s':>10}")
    for size in sizes:
        print(f"{size:>6} {best[size]:>9.3f} {rate[size]:>10.2f}")
    print(f"batch speedup {rate[args.batch_size] / rate[1]:.2f}x, scores identical: {identical}")
    if args.json:
        print(json.dumps({"samples_per_s_b1": round(rate[1], 4), f"samples_per_s_b{args.batch_size}":
                          round(rate[args.batch_size], 4),
                          "batch_speedup": round(rate[args.batch_size] / rate[1], 4), "identical": identical}))


if __name__ == "__main__":
    main()
