"""exp_masking: answer quality with the top-k heads, or k random heads, masked (zeroed before o_proj), or, with
``--mask_mode``, cut off one key group of each sample (:mod:`ocr_heads.experiments.key_edits`)."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from ocr_heads.core.registry import lazy
from ocr_heads.experiments.base import FINE_GRAINED, NONE, Choice, Edit, Experiment, switches

if TYPE_CHECKING:
    from ocr_heads.models.base import ModelAdapter

logger = logging.getLogger(__name__)

# Imported on first use: the report lists this experiment without loading torch.
mask_heads = lazy("ocr_heads.attention.edits:mask_heads")
blocked_from = lazy("ocr_heads.experiments.key_edits:blocked_from")

OUTPUT = "output"
MASK_MODE = Choice("mask_mode", OUTPUT, (OUTPUT, "image_keys", "evidence_keys", "text_keys"),
                   help="what masking cuts: output = the heads' whole output (zeroed before o_proj); image_keys = "
                   "their attention to every image token; evidence_keys = to the image tokens covering the answer's "
                   "characters (step1/passkey data only); text_keys = to every non-image token except the sink "
                   "(question, template, generated tokens); the rest of each row renormalised. A mode other than "
                   "output is appended to the file stem")
# The tasks whose examples carry the answer characters' pixel boxes (step1 records' "evidence").
EVIDENCE_TASKS = ("passkey",)


def masked(adapter: ModelAdapter, heads: list[str], options: Mapping[str, float | str]) -> AbstractContextManager:
    """The masking context: every head in ``heads`` outputs zeros, or, with a mask_mode other than output, is cut
    off that key group of every sample."""
    mode = options.get(MASK_MODE.name, OUTPUT)
    return mask_heads(adapter, heads) if mode == OUTPUT else blocked_from(adapter, heads, mode)


add_flags = switches(
    ("do_masking", "mask the head set (else: baseline, no masking)"),
    ("is_all_random", "k random heads instead of the top k"),
    ("no_intersection", "with --is_all_random: draw only from heads not in the head list"),
    FINE_GRAINED,
)


def head_set(args: argparse.Namespace) -> str:
    mode = getattr(args, MASK_MODE.name, OUTPUT)
    if mode == "evidence_keys" and args.do_masking:
        without = [name for name in args.datasets if name not in EVIDENCE_TASKS]
        if without:
            raise ValueError(f"--mask_mode evidence_keys needs the answer's evidence boxes, which only "
                             f"{', '.join(EVIDENCE_TASKS)} samples have (not {', '.join(without)})")
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
    choices=(MASK_MODE,),
    epilog="head_set: none | top | random (--is_all_random) | random_disjoint (--is_all_random --no_intersection)\n"
    "--mask_mode M other than output appends _M to the stem (e.g. passkey_image_top_k10_image_keys); the CSV's "
    "mask_mode column is output for plain masking and for the unmodified model",
)
