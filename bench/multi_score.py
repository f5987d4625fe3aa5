"""Benchmark: what scoring every registered image score in one pass costs against the OCR score alone.

    python bench/multi_score.py [--json] [--n 12] [--pairs 3] [--model models/toy-qwen2-vl]

Two measurements on the same toy passkey samples, each interleaved A/B/A/B (``--pairs`` rounds, after one warm-up
of each) so that load on the machine falls on both alike:

- command: ``step2_ocr_retrieval_head.py --score ocr`` against ``--score all`` (every registered image score),
  run in this process through ``ocr_heads.pipeline.step2.main`` into a fresh ``--out`` each time: model loading,
  fingerprint, generation under capture, every score's rule, per-sample logs and score files;
- scoring: the part that grows with the scores, on a model loaded once: generation under capture with the union
  of the scores' probes, every score's rule and its per-sample log record
  (``ocr_heads.pipeline.sample_scoring.score_batch_scores``).

The ratio reported is all / ocr of each method's best time over the rounds (other jobs only ever slow a run down,
as bench/throughput.py keeps its best time too; the target is <= 1.3); each round's own ratio is listed as well,
and their range printed.
torch runs on ``--threads`` CPU threads (default 1): on a small shared machine several threads contend with other
jobs, and that contention, not the scores, then decides the times.
Prints a table on stdout (step2's log lines go to stderr); with --json the last line is
``{"scores", "n", "pairs", "command": {...}, "scoring": {...}}``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.3


def run_command(model: Path, data: Path, out: Path, scores: list[str], max_new_tokens: int) -> float:
    """Seconds of one step2 command into a fresh ``out``."""
    from ocr_heads.pipeline.step2 import main
    from ocr_heads.toy.data import TOY_PROTOCOL

    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    code = main("image", ["--model_id", str(model), "--protocol", TOY_PROTOCOL, "--data", str(data), "--out", str(out),
                          "--max_new_tokens", str(max_new_tokens), "--score", *scores])
    elapsed = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"step2 --score {' '.join(scores)} exited {code}")
    return elapsed


def run_scoring(adapter, samples, scores, max_new_tokens: int) -> float:
    """Seconds to generate and score ``samples`` one at a time with ``scores`` in one pass, log records included."""
    from ocr_heads.attention import capture
    from ocr_heads.pipeline.sample_scoring import score_batch_scores
    from ocr_heads.scores import Settings

    start = time.perf_counter()
    with capture(adapter) as recorder:
        for sample in samples:
            (outcome,) = score_batch_scores(adapter, recorder, [sample], scores, Settings(), max_new_tokens)
            if isinstance(outcome, Exception):
                raise outcome
            for result in outcome.values():
                if isinstance(result, Exception):
                    raise result
                result.log_record()
    return time.perf_counter() - start


def interleaved(run_a, run_b, pairs: int) -> dict:
    """One warm-up of each, then ``pairs`` rounds of A then B; per-round ratios B / A."""
    run_a(), run_b()
    a, b = [], []
    for _ in range(pairs):
        a.append(run_a())
        b.append(run_b())
    ratios = [y / x for x, y in zip(a, b, strict=True)]
    return {"ocr_s": min(a), "all_s": min(b), "ratio": round(min(b) / min(a), 3),
            "round_ratios": [round(r, 3) for r in ratios],
            "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
            "median_round_ratio": round(statistics.median(ratios), 3)}


def measure(model: Path, n: int, pairs: int, max_new_tokens: int = 8) -> dict:
    from ocr_heads.data.samples import load_samples
    from ocr_heads.models import load_adapter
    from ocr_heads.scores import of_modality
    from ocr_heads.toy.data import TOY_PROTOCOL, write_samples

    everything = of_modality("image")
    names = [score.name for score in everything]
    with tempfile.TemporaryDirectory(prefix="multi-score-") as tmp:
        data = Path(tmp) / "data"
        write_samples(data, n, seed=4000)
        command = interleaved(lambda: run_command(model, data, Path(tmp) / "ocr", ["ocr"], max_new_tokens),
                              lambda: run_command(model, data, Path(tmp) / "all", ["all"], max_new_tokens), pairs)
        adapter = load_adapter(str(model), protocol=TOY_PROTOCOL)
        samples = load_samples(data)
        ocr = [score for score in everything if score.name == "ocr"]
        scoring = interleaved(lambda: run_scoring(adapter, samples, ocr, max_new_tokens),
                              lambda: run_scoring(adapter, samples, everything, max_new_tokens), pairs)
    return {"scores": names, "n": n, "pairs": pairs, "command": command, "scoring": scoring}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "toy-qwen2-vl", help="model dir (the toy)")
    parser.add_argument("--n", type=int, default=12, help="toy samples per run (default 12)")
    parser.add_argument("--pairs", type=int, default=5, help="interleaved rounds of ocr then all (default 5)")
    parser.add_argument("--max_new_tokens", type=int, default=8, help="greedy decoding length (default 8)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    args = parser.parse_args(argv)
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return report(args)
    finally:
        torch.set_num_threads(threads)  # a caller in the same process (a test) keeps its own


def report(args: argparse.Namespace) -> dict:
    os.environ.setdefault("TQDM_DISABLE", "1")
    summary = measure(args.model, args.n, args.pairs, args.max_new_tokens)
    print(f"{args.n} toy samples, {args.pairs} interleaved rounds (ocr, all), {args.threads} torch thread(s); "
          f"all = {', '.join(summary['scores'])}")
    print(f"{'measured':<10} {'ocr s':>8} {'all s':>8} {'all/ocr':>8}  round ratios (best times; target <= {TARGET})")
    for what in ("command", "scoring"):
        row = summary[what]
        low, high = row["ratio_range"]
        print(f"{what:<10} {row['ocr_s']:>8.2f} {row['all_s']:>8.2f} {row['ratio']:>8.2f}  {low:.2f}-{high:.2f}")
    if args.json:
        print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
