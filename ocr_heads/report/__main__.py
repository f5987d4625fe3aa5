"""``python -m ocr_heads.report``: figures, tables and a summary from score JSONs (see --help)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ocr_heads.report.build import build_report
from ocr_heads.selection import DEFAULT_MIN_FREQUENCY, DEFAULT_MIN_SCORE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ocr_heads.report",
        description="Reads per-event score JSONs ({'l0_h0': [values...]}, ours or the authors'), optionally "
        "results/masking.csv and results/sink.csv and a case-study JSON; writes DIR/index.html, one "
        "PNG per figure (heatmaps, sparsity, distinctness, activation, case study) and prints a summary.",
    )
    parser.add_argument(
        "--scores", nargs="*", default=[], type=Path, help="score files (OCR and/or retrieval)"
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder for index.html and the PNGs")
    parser.add_argument(
        "--results",
        type=Path,
        default=Path("results"),
        help="folder with masking.csv / sink.csv (skipped when absent; default: results)",
    )
    parser.add_argument(
        "--case", type=Path, help='case-study JSON {"model": M, "chars": {"0": {"l0_h0": s}, ...}}'
    )
    parser.add_argument(
        "--kind", help="override kind (ocr|retrieval) for all files, or a comma list, one per file"
    )
    parser.add_argument(
        "--model", help="override the model name for all files, or a comma list, one per file"
    )
    parser.add_argument("--min_score", type=float, default=DEFAULT_MIN_SCORE)
    parser.add_argument("--min_frequency", type=float, default=DEFAULT_MIN_FREQUENCY)
    args = parser.parse_args(argv)
    if not args.scores and args.case is None:
        parser.error("give --scores FILE [FILE ...] and/or --case FILE")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result = build_report(
        args.scores,
        args.out,
        results_dir=args.results,
        case=args.case,
        kinds=args.kind,
        models=args.model,
        min_score=args.min_score,
        min_frequency=args.min_frequency,
    )
    print(result.summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
