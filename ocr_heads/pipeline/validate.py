"""exp_validate.py's command line: which score's top heads matter, each against random heads (see --help)."""

from __future__ import annotations

import argparse
import csv
import io
import logging
import textwrap
from pathlib import Path

from ocr_heads.core.commandline import Parser, count_help, positive_int, run_cli, setup_logging
from ocr_heads.core.errors import UserError
from ocr_heads.core.io import ensure_writable_dir, write_text_atomic
from ocr_heads.core.provenance import MODEL_KEY, claim, data_fingerprint, model_fingerprint, model_origin
from ocr_heads.experiments.causal_gap import DEFAULT_RESAMPLES, MIN_BOOTSTRAP_SAMPLES
from ocr_heads.experiments.data import resolve_sources
from ocr_heads.experiments.scored_heads import ScoredHeads, check_fits_model, check_together, load_scored_heads
from ocr_heads.experiments.validate import (
    DEFAULT_KS,
    DEFAULT_SEEDS,
    EDITS,
    RUN_COLUMNS,
    SCORE_COLUMNS,
    SUMMARY_COLUMNS,
    Split,
    Sweep,
    check_sample_count,
    chosen_ks,
    measure,
    run_rows,
    score_gaps,
    score_rows,
    summary_rows,
)
from ocr_heads.models import load_adapter
from ocr_heads.models.options import adapter_kwargs, add_model_args, knob_names
from ocr_heads.pipeline.experiment import DEFAULT_MODEL
from ocr_heads.scores.files import load_scores
from ocr_heads.tasks import DEFAULT_N, all_tasks

logger = logging.getLogger(__name__)

DESCRIPTION = (
    "Which score's heads matter? For each score file (or step3 head list) of one model and each k of a grid: the "
    "metric (EM; ANLS for doc/mdocs) with the score's top-k heads edited, with k random heads (--seeds seeds) and "
    "with k random heads outside the top k, against the unmodified model (run once, shared by every score). The "
    "causal gap = top-k drop minus the mean random drop, with a paired bootstrap 95% interval over samples, and "
    "its area over k. k is chosen per score where the gap is largest: on --calibration when given (then reported "
    "on --datasets: held out), else on --datasets itself (said so in the output). Heads found on passkey pages "
    "can be validated on other tasks: --datasets doc mdocs ... is one run.")
EPILOG = f"""reads: --scores (score files with their .meta.json sidecars, or step3 head lists), --data
outputs (SUFFIX = '' for one dataset, else _DATASET per dataset):
  OUT/validate_summary{{SUFFIX}}.csv   {",".join(SUMMARY_COLUMNS)}
  OUT/validate_scores{{SUFFIX}}.csv    per score: {", ".join(SCORE_COLUMNS[2:])}
  OUT/validate.csv                   one row per score x k x head set (baseline, top, random seed s,
                                     random_disjoint seed s; calibration rows too): {", ".join(RUN_COLUMNS)}
  OUT/validate_drop{{SUFFIX}}.png      drop vs k per score, random band shaded
  OUT/validate_similarity.csv/.png   Jaccard of the scores' top-k sets, Spearman of their rankings
  OUT/report/index.html              score maps and this section (python -m ocr_heads.report --validate OUT)
  OUT/runs/, OUT/calibration/        the runs (exp_masking's files; resumable: rerun the same command)
The k grid is capped by the heads a score ranks and the model has (the cap is logged; validate_scores.csv lists
the ks used). At least {MIN_BOOTSTRAP_SAMPLES} samples per split (the bootstrap's minimum). A rerun into the same
--out with other scores, model, data or edit is refused; --ks, --seeds and --n may change (finished runs are reused).
"""
SETTINGS_FILE = "validate.settings.json"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(description=textwrap.fill(DESCRIPTION, 100), epilog=EPILOG,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(parser, DEFAULT_MODEL)
    parser.add_argument("--scores", nargs="+", type=Path, required=True, metavar="FILE",
                        help="score files (step2 output, e.g. scores/image/M_fg.json) or step3 head lists of "
                        "registered scores, all of one model, protocol and data")
    parser.add_argument("--datasets", nargs="+", default=["passkey"], choices=sorted(all_tasks()), metavar="NAME",
                        help=f"datasets to evaluate on: {', '.join(all_tasks())} (default passkey)")
    parser.add_argument("--data", nargs="+", default=None, metavar="[NAME=]PATH",
                        help="local data: NAME=PATH per dataset (passkey: a step1 output dir), as exp_masking takes it")
    parser.add_argument("--calibration", default=None, metavar="[NAME=]PATH",
                        help="a calibration split (e.g. passkey=DIR, disjoint from --data) to choose each score's k "
                        "on; the gap at that k is then reported on --datasets (default: k chosen on --datasets)")
    parser.add_argument("--n", type=positive_int, default=DEFAULT_N, help=count_help("per dataset", DEFAULT_N))
    parser.add_argument("--calibration_n", type=positive_int, default=None,
                        help="samples of the calibration split (default: --n)")
    parser.add_argument("--ks", nargs="+", type=positive_int, default=list(DEFAULT_KS), metavar="K",
                        help=f"the k grid (default {' '.join(map(str, DEFAULT_KS))}; capped by the head count)")
    parser.add_argument("--seeds", type=positive_int, default=DEFAULT_SEEDS, metavar="S",
                        help=f"how many random head sets per k: seeds 0..S-1 (default {DEFAULT_SEEDS})")
    parser.add_argument("--disjoint_seeds", type=int, default=None, metavar="D",
                        help="random head sets outside the top k per k: seeds 0..D-1 (default: --seeds; 0: none)")
    parser.add_argument("--edit", choices=sorted(EDITS), default="mask",
                        help="what is done to a head set: mask = its output zeroed (exp_masking; default)")
    parser.add_argument("--resamples", type=positive_int, default=DEFAULT_RESAMPLES,
                        help=f"bootstrap resamples (default {DEFAULT_RESAMPLES})")
    parser.add_argument("--bootstrap_seed", type=int, default=0, help="seed of the bootstrap draws (default 0)")
    parser.add_argument("--max_new_tokens", type=positive_int, default=32, help="greedy decoding length (default 32)")
    parser.add_argument("--data_seed", type=int, default=0,
                        help="seed of per-example context composition (nq/hotpot distractors; default 0)")
    parser.add_argument("--batch_size", type=positive_int, default=1,
                        help="samples generated together (left-padded; results equal --batch_size 1; default 1)")
    parser.add_argument("--out", type=Path, default=Path("results/validate"), help="output folder "
                        "(default results/validate)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    return run_cli(_run, args)


def calibration_split(args: argparse.Namespace) -> Split | None:
    """``--calibration NAME=PATH`` (or a bare PATH with one dataset) as a split."""
    if args.calibration is None:
        return None
    name, sep, path = args.calibration.partition("=")
    if not sep:
        if len(args.datasets) != 1:
            raise UserError(f"--calibration {args.calibration}: with several --datasets write NAME=PATH")
        name, path = args.datasets[0], args.calibration
    if name not in all_tasks():
        raise UserError(f"--calibration {args.calibration}: {name} is not a dataset ({', '.join(all_tasks())})")
    return Split("calibration", name, path, args.calibration_n or args.n)


def settings(args: argparse.Namespace, scored: list[ScoredHeads], fingerprint: str, protocol: str,
             sources: dict[str, str | None], calibration: Split | None) -> dict:
    """What a rerun into the same --out must share (the grid, the seeds and n may change)."""
    return {"edit": args.edit, MODEL_KEY: fingerprint, "protocol": protocol,
            "scores": {item.score: item.fingerprint for item in scored},
            "datasets": {name: [source, data_fingerprint(source)] for name, source in sources.items()},
            "calibration": None if calibration is None else [calibration.dataset, calibration.source,
                                                             data_fingerprint(calibration.source)],
            "max_new_tokens": args.max_new_tokens, "data_seed": args.data_seed,
            "knobs": {name: getattr(args, name) for name in knob_names() if getattr(args, name, None) is not None}}


def write_csv(path: Path, columns: list[str], rows: list[dict]) -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())
    return path


def _run(args: argparse.Namespace) -> int:
    if args.seeds < DEFAULT_SEEDS:
        logger.warning("--seeds %d: fewer than %d random head sets per k; the random band is thin", args.seeds,
                       DEFAULT_SEEDS)
    ensure_writable_dir(args.out)
    sources = resolve_sources(args.datasets, args.data)
    calibration = calibration_split(args)
    scored = [load_scored_heads(path) for path in args.scores]
    check_together(scored)
    splits = [Split("heldout", name, sources[name], args.n) for name in args.datasets]
    if calibration is not None and any((s.dataset, s.source) == (calibration.dataset, calibration.source)
                                       for s in splits):
        logger.warning("--calibration is the very data evaluated: the gap at the chosen k is not held out")
    for split in ([calibration] if calibration else []) + splits:
        check_sample_count(split)  # before the model loads
    adapter = load_adapter(args.model_id, **adapter_kwargs(args))
    fingerprint = model_fingerprint(args.model_id)
    check_fits_model(scored, adapter.shape.num_layers, adapter.shape.num_heads, fingerprint)
    claim(args.out / SETTINGS_FILE, settings(args, scored, fingerprint, adapter.protocol, sources, calibration),
          str(args.out), "pass another --out to keep both", recorded={"model_source": model_origin(args.model_id)})
    knobs = {name: getattr(args, name) for name in knob_names() if getattr(args, name, None) is not None}
    sweep = Sweep(adapter, args.model_id, fingerprint, args.edit, args.ks, list(range(args.seeds)),
                  args.max_new_tokens, args.data_seed, knobs, args.batch_size,
                  None if args.disjoint_seeds is None else list(range(max(args.disjoint_seeds, 0))))
    validate(sweep, scored, splits, calibration, args.out, args.resamples, args.bootstrap_seed)
    return 0


def validate(sweep: Sweep, scored: list[ScoredHeads], splits: list[Split], calibration: Split | None, out: Path,
             resamples: int = DEFAULT_RESAMPLES, bootstrap_seed: int = 0) -> dict[str, list[dict]]:
    """Run the sweep (calibration first, when given) and write every output; returns, per evaluated dataset, the
    rows of its ``validate_scores`` table (chosen k, top heads, gap with interval, verdict). The demo calls it with
    the model it has loaded."""
    import pandas as pd  # here, with the figures' matplotlib: building the parser stays light

    from ocr_heads.report.sections.validation import (
        SIMILARITY_COLUMNS,
        drop_figure,
        output_name,
        similarity_figure,
        similarity_rows,
    )

    grids = {item.score: sweep.grid(item) for item in scored}
    rows: list[dict] = []
    tables: dict[str, list[dict]] = {}
    chosen, chosen_on = {}, ""
    if calibration is not None:
        measured = measure(sweep, calibration, scored, grids, out / "calibration")
        gaps = [score_gaps(measured, item, grids[item.score], resamples, bootstrap_seed) for item in scored]
        chosen, chosen_on = chosen_ks(gaps), f"calibration ({calibration.dataset}, n={measured.baseline.summary['n']})"
        rows += run_rows(measured, scored, sweep)
        logger.info("k chosen on the calibration split: %s", ", ".join(f"{s} {k}" for s, k in chosen.items()))
    several = len(splits) > 1
    for split in splits:
        measured = measure(sweep, split, scored, grids, out / "runs")
        gaps = [score_gaps(measured, item, grids[item.score], resamples, bootstrap_seed) for item in scored]
        here = chosen or chosen_ks(gaps)
        on = chosen_on or f"{split.dataset} itself (no --calibration: the same samples, not held out)"
        suffix = split.dataset if several else None
        summary = write_csv(out / output_name("summary", suffix, ".csv"), SUMMARY_COLUMNS, summary_rows(gaps))
        table = tables[split.dataset] = score_rows(split.dataset, gaps, here, on, scored)
        write_csv(out / output_name("scores", suffix, ".csv"), SCORE_COLUMNS, table)
        split_rows = run_rows(measured, scored, sweep)
        rows += split_rows
        note = measured.baseline.summary.get("warning", "")
        figure = drop_figure(pd.DataFrame(split_rows), here, out / output_name("drop", suffix, ".png"),
                             f"{measured.baseline.summary['model']} on {split.dataset} (n={table[0]['n']}), "
                             f"{sweep.edit}; k chosen on {on}" + (f"\n[{note}]" if note else ""))
        print(f"\n{split.dataset}: causal gap at each score's chosen k (chosen on {on}); {measured.metric} drops in "
              f"points; baseline {measured.metric} {100 * _mean(measured.baseline.values.values()):.1f}")
        print(verdict_table(table))
        logger.info("wrote %s, %s", summary, figure)
    write_csv(out / output_name("", None, ".csv"), RUN_COLUMNS, rows)
    ks = sorted({k for grid in grids.values() for k in grid})
    similarity = similarity_rows({item.score: item.ranking for item in scored},
                                 {item.score: item.values for item in scored}, ks)
    write_csv(out / output_name("similarity", None, ".csv"), SIMILARITY_COLUMNS, similarity)
    similarity_figure(similarity, out / output_name("similarity", None, ".png"),
                      f"{sweep.adapter.name}: how alike the scores' heads are")
    _report(out, scored)
    return tables


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def verdict_table(rows: list[dict]) -> str:
    """The printed table: score, top heads, gap at the chosen k with its interval, the verdict."""
    lines = [f"{'score':<18}{'k':>3}  {'gap (95% CI), points':<26}{'verdict':<24}top heads"]
    for row in rows:
        gap = f"{100 * float(row['gap']):+.1f} ({100 * float(row['gap_ci_low']):+.1f}, " \
              f"{100 * float(row['gap_ci_high']):+.1f})"
        lines.append(f"{row['score']:<18}{row['chosen_k']:>3}  {gap:<26}{row['verdict']:<24}{row['top_heads']}")
    return "\n".join(lines)


def _report(out: Path, scored: list[ScoredHeads]) -> None:
    """OUT/report/index.html: the score maps of the score files given and the validation section."""
    from ocr_heads.report.build import build_report

    files = []
    for item in scored:
        try:
            files.append(load_scores(item.path))
        except ValueError:  # a head list: no map to draw
            continue
    result = build_report(files, out / "report", validate_dir=out)
    logger.info("report: %s", result.index)
