"""Step 3: extract OCR / retrieval heads from a score file.

Reads a per-event score file ({"l0_h0": [values...], ...}, ours or the authors') and writes a ranked JSON
list of the heads whose mean score >= --min_score and whose activation frequency passes --min_frequency:

    python step3_extracted_heads.py --scores scores/image/Qwen2-VL-2B-Instruct_fg.json --out heads.json
    python step3_extracted_heads.py --te_fg_cg te --model_id Qwen/Qwen2-VL-2B-Instruct   # seed README style

Output: {"heads": [{"head": "l26_h9", "score": 0.73, "frequency": 0.87}, ...], "rule": ..., "source": ...}.
Rules: documented (default; non-zero fraction >= threshold), authors (their code; zero fraction > it).
A head's score is the mean of its event values (default), or with --aggregate frequency the share of its
events above --event_threshold; --min_score gates and the ranking sorts on that score:

    python step3_extracted_heads.py --scores scores/image/M_ocrmass.json --aggregate frequency \
        --event_threshold 0.1 --out heads.json
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ocr_heads.core.commandline import Parser, run_cli, setup_logging
from ocr_heads.core.errors import UserError
from ocr_heads.core.io import write_json_atomic
from ocr_heads.core.paths import model_name
from ocr_heads.core.provenance import note_of
from ocr_heads.scores import all_scores
from ocr_heads.scores.files import heads_file, load_scores, score_file
from ocr_heads.scores.selection import (
    AGGREGATES,
    DEFAULT_EVENT_THRESHOLD,
    DEFAULT_MIN_FREQUENCY,
    DEFAULT_MIN_SCORE,
    RULES,
    select_heads,
    selection_record,
)

logger = logging.getLogger(__name__)


def model_shape(model_id: str) -> tuple[int, int] | None:
    """(layers, heads) of the language decoder from the model config; None if the config cannot be read."""
    from transformers import AutoConfig  # slow import, only when a config check is asked for

    try:
        config = AutoConfig.from_pretrained(model_id, trust_remote_code=True)
    except (OSError, ValueError) as err:
        logger.warning("cannot read the config of %s (%s); skipping the head-count check", model_id, err)
        return None
    # Native configs nest the decoder as text_config; InternVL2 remote code calls it llm_config.
    text = getattr(config, "llm_config", None) or config.get_text_config()
    return text.num_hidden_layers, text.num_attention_heads


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--scores", type=Path, help="per-event score JSON (its _mean/.meta.json companions optional)"
    )
    parser.add_argument(
        "--te_fg_cg",
        choices=[score.tag for score in all_scores().values()],
        metavar="TAG",
        help="instead of --scores: the file tag of a registered score, e.g. fg = OCR scores "
        "(scores/image/NAME_fg.json), te = text retrieval scores (scores/text/NAME_te.json), prefill = prefill-read "
        f"scores (scores/image/NAME_prefill.json); one of {', '.join(s.tag for s in all_scores().values())}; "
        "needs --model_id",
    )
    parser.add_argument(
        "--model_id",
        help="hub id or local dir; its last path component is NAME. "
        "Also checks the score file's head count against the model config",
    )
    parser.add_argument(
        "--scores_dir", type=Path, default=Path("scores"), help="root for --te_fg_cg (default: scores)"
    )
    parser.add_argument(
        "--rule",
        choices=RULES,
        default="documented",
        help="documented: non-zero fraction >= min_frequency (the paper); "
        "authors: zero fraction > min_frequency (their released code)",
    )
    parser.add_argument("--min_score", type=float, default=DEFAULT_MIN_SCORE,
                        help="minimum score (0.1): the mean, or with --aggregate frequency the frequency")
    parser.add_argument(
        "--aggregate",
        choices=AGGREGATES,
        default=AGGREGATES[0],
        help="what a head's score is, for any score file: mean (default, the paper's) = the mean of its event values; "
        "frequency = the share of its events whose value exceeds --event_threshold. --min_score gates and the list "
        "is ranked on it; the frequency gate (--min_frequency) is unchanged",
    )
    parser.add_argument(
        "--event_threshold", type=float, default=DEFAULT_EVENT_THRESHOLD,
        help=f"with --aggregate frequency: an event counts when its value exceeds this (default "
        f"{DEFAULT_EVENT_THRESHOLD}: any non-zero value; the mass scores' events are rarely exactly 0, give them "
        "e.g. 0.1)",
    )
    parser.add_argument(
        "--min_frequency", type=float, default=DEFAULT_MIN_FREQUENCY, help="frequency threshold (0.1)"
    )
    parser.add_argument("--num_layers", type=int, help="expected decoder layers (checked against the file)")
    parser.add_argument("--num_heads", type=int, help="expected heads per layer (checked against the file)")
    parser.add_argument(
        "--out",
        type=Path,
        help="output JSON (default with --te_fg_cg: scores/heads/NAME_{fg|te}_{rule}.json)",
    )
    args = parser.parse_args(argv)
    name = model_name(args.model_id) if args.model_id else None
    if args.scores is None:
        if not (args.te_fg_cg and name):
            parser.error("give --scores FILE, or --te_fg_cg fg|te with --model_id")
        args.scores = score_file(args.scores_dir, name, args.te_fg_cg)
    if args.out is None:
        if not (args.te_fg_cg and name):
            parser.error("--out is required with --scores")
        args.out = heads_file(args.scores_dir, name, args.te_fg_cg, args.rule)
    return args


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_args(argv)
    return run_cli(_run, args)


def _run(args: argparse.Namespace) -> int:
    scores = load_scores(args.scores)
    # Retrieval files hold one (all-zero) value per sample even when nothing was scored: the meta says so.
    if all(not values for values in scores.per_head.values()) or scores.meta.get("n_events") == 0:
        raise UserError(f"{args.scores} holds no events (its step2 run never scored an answer token): "
                        "no heads can be selected from it")
    expected = (args.num_layers, args.num_heads)
    if None in expected and args.model_id:
        expected = model_shape(args.model_id) or expected
    for what, want, have in (
        ("layers", expected[0], scores.num_layers),
        ("heads", expected[1], scores.num_heads),
    ):
        if want is not None and want != have:
            raise UserError(f"{args.scores} has {have} {what} but the model has {want}: wrong file for this model?")
    selected = select_heads(scores, args.rule, args.min_score, args.min_frequency, args.aggregate,
                            args.event_threshold)
    record = selection_record(scores, selected, args.rule, args.min_score, args.min_frequency, args.aggregate,
                              args.event_threshold)
    note = note_of(scores.meta)
    if note:
        record["warning"] = note  # the head list travels without its score file: the caveat goes with it
    write_json_atomic(args.out, record)
    ranked_by = "" if args.aggregate == AGGREGATES[0] else (
        f", ranked by the share of events above {args.event_threshold}")
    print(f"{len(selected)} heads selected by the {args.rule} rule from {args.scores}{ranked_by} -> {args.out}")
    if note:
        print(f"  caveat: {note}")
    for entry in selected[:10]:
        print(f"  {entry.head:>8}  score {entry.score:.4f}  frequency {entry.frequency:.3f}")
    return 0
