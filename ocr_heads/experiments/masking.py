"""exp_masking: answer quality with the top-k heads, or k random heads, masked (zeroed before o_proj)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from ocr_heads.core.registry import lazy
from ocr_heads.experiments.base import FINE_GRAINED, NONE, Edit, Experiment, switches

if TYPE_CHECKING:
    from ocr_heads.models.base import ModelAdapter

logger = logging.getLogger(__name__)

# Imported on first use: the report lists this experiment without loading torch.
mask_heads = lazy("ocr_heads.attention.edits:mask_heads")


def masked(adapter: ModelAdapter, heads: list[str], options: Mapping[str, float]) -> AbstractContextManager:
    """The masking context: every head in ``heads`` outputs zeros (no options)."""
    return mask_heads(adapter, heads)


add_flags = switches(
    ("do_masking", "mask the head set (else: baseline, no masking)"),
    ("is_all_random", "k random heads instead of the top k"),
    ("no_intersection", "with --is_all_random: draw only from heads not in the head list"),
    FINE_GRAINED,
)


def head_set(args: argparse.Namespace) -> str:
    if not args.do_masking:
        if args.is_all_random or args.no_intersection:
            logger.warning("--is_all_random/--no_intersection have no effect without --do_masking")
        return NONE
    if args.no_intersection and not args.is_all_random:
        raise ValueError("--no_intersection needs --is_all_random (it picks random heads outside the head list)")
    if args.is_all_random:
        return "random_disjoint" if args.no_intersection else "random"
    return "top"


EXPERIMENT = Experiment(
    name="masking",
    description="Masking experiment: answer quality when the top-k OCR (--task image) or retrieval (--task text) "
    "heads, or k random heads, are masked (their output before o_proj zeroed at every position). Without "
    "--do_masking the unmodified model is evaluated (head_set none).",
    edits={"top": Edit("top", masked, "--do_masking"),
           "random": Edit("random", masked, "--do_masking --is_all_random"),
           "random_disjoint": Edit("random_disjoint", masked, "--do_masking --is_all_random --no_intersection")},
    head_set=head_set,
    add_flags=add_flags,
    default_datasets=("doc",),
    default_k=10,
    title="Masking",
    # The crossed grid of the paper's masking claims: the unmodified model, the top-k OCR heads, the top-k
    # retrieval heads and k random heads (with --prompt direct cot: each under both prompts).
    grid=((NONE, None), ("top", "image"), ("top", "text"), ("random", None)),
    epilog="head_set: none | top | random (--is_all_random) | random_disjoint (--is_all_random --no_intersection)",
)
