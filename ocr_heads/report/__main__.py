"""``python -m ocr_heads.report``: figures, tables and a summary from score JSONs (see --help)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ocr_heads.core.commandline import Parser, run_cli, setup_logging
from ocr_heads.core.errors import UserError
from ocr_heads.report.base_llm import parse_pair
from ocr_heads.report.build import build_report
from ocr_heads.scores.selection import DEFAULT_MIN_FREQUENCY, DEFAULT_MIN_SCORE


def main(argv: list[str] | None = None) -> int:
    parser = Parser(
        prog="python -m ocr_heads.report",
        description="Reads per-event score JSONs ({'l0_h0': [values...]}, ours or the authors'), optionally "
        "the masking.csv and sink.csv of a --results folder and a case-study JSON; writes DIR/index.html, one "
        "PNG per figure (heatmaps, sparsity, distinctness, activation, case study), DIR/masking_table.csv "
        "(one row group per model) and prints a summary. Caveats recorded with the scores (random weights, "
        "toy model) head the report and every caption built from them.",
    )
    parser.add_argument(
        "--scores", nargs="*", default=[], type=Path, help="score files (OCR and/or retrieval)"
    )
    parser.add_argument("--out", required=True, type=Path, help="output folder for index.html and the PNGs")
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        help="folder with masking.csv / sink.csv, e.g. results (default: none; never read unless given)",
    )
    parser.add_argument(
        "--case", type=Path, help='case-study JSON {"model": M, "chars": {"0": {"l0_h0": s}, ...}}'
    )
    parser.add_argument(
        "--look", type=Path, help="a folder written by python -m ocr_heads.look: linked (viewer) and shown (overlays)"
    )
    parser.add_argument(
        "--validate", type=Path, help="a folder written by exp_validate.py: its causal-gap tables and figures"
    )
    parser.add_argument(
        "--kind", help="override kind (ocr|retrieval) for all files, or a comma list, one per file"
    )
    parser.add_argument(
        "--model_name", help="override the model name for all files, or a comma list, one per file"
    )
    parser.add_argument(
        "--base_llm", action="append", default=[], type=_pair, metavar="VLM_SCORE=LLM_SCORE",
        help="pair a VLM's OCR score file with its base LLM's retrieval score file (e.g. one imported with "
        "python -m ocr_heads.scores.wu) for the paper's sparsity comparison (DIR/sparsity_base_llm.png); repeat "
        "per pair. Default: the paper's pairs (Qwen2-VL-2B/7B -> Qwen2-1.5B/7B, InternVL2-8B -> InternLM2.5-7B) "
        "found among --scores by model name",
    )
    parser.add_argument("--min_score", type=float, default=DEFAULT_MIN_SCORE)
    parser.add_argument("--min_frequency", type=float, default=DEFAULT_MIN_FREQUENCY)
    args = parser.parse_args(argv)
    if not args.scores and args.case is None and args.look is None and args.validate is None:
        parser.error("give --scores FILE [FILE ...], --case FILE, --look DIR and/or --validate DIR")
    setup_logging()
    return run_cli(_run, args)


def _pair(text: str) -> tuple[Path, Path]:
    try:
        return parse_pair(text)
    except ValueError as err:  # argparse then prints the message itself, not "invalid value"
        raise argparse.ArgumentTypeError(str(err)) from None


def _run(args) -> int:
    if args.results is not None and not args.results.is_dir():
        raise UserError(f"--results {args.results}: no such folder")
    result = build_report(
        args.scores,
        args.out,
        results_dir=args.results,
        case=args.case,
        kinds=args.kind,
        models=args.model_name,
        min_score=args.min_score,
        min_frequency=args.min_frequency,
        look_dir=args.look,
        base_llm=args.base_llm,
        validate_dir=args.validate,
    )
    print(result.summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
