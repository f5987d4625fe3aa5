"""exp_sink: answer quality when the top-k heads move part of their attention off the sink (key 0).

The flags mean what they mean in the authors' exp_sink.py: ``--do_masking --unmasking`` applies the sink
edit (head set ``sink_top``); ``--do_masking`` alone masks the top-k heads instead (head set ``top``, the
masking experiment's edit); without ``--do_masking`` the unmodified model runs, with or without
``--unmasking``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from contextlib import AbstractContextManager

from ocr_heads.attention.edits import BETA_DEFAULT, BETA_RANGE, redistribute_sink_heads
from ocr_heads.experiments import masking
from ocr_heads.experiments.base import NONE, Edit, Experiment, Option
from ocr_heads.models.base import ModelAdapter

logger = logging.getLogger(__name__)

BETA = Option("beta", BETA_DEFAULT, *BETA_RANGE, help="fraction of the sink probability kept", symbol="B")


def redistributed(adapter: ModelAdapter, heads: list[str], options: Mapping[str, float]) -> AbstractContextManager:
    """The sink context: ``heads`` keep ``beta`` of their key-0 probability and spread the rest."""
    return redistribute_sink_heads(adapter, heads, options[BETA.name])


def add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--do_masking", action="store_true",
                        help="intervene on the top-k heads: the sink edit with --unmasking, else masking "
                        "(without it: baseline, no edit)")
    parser.add_argument("--unmasking", action="store_true",
                        help="with --do_masking: redistribute the sink instead of masking (alone: no effect)")
    parser.add_argument("--fine_grained", action="store_true",
                        help="accepted for the authors' commands; OCR head lists are always the fine-grained ones")


def head_set(args: argparse.Namespace) -> str:
    if not args.do_masking:
        if args.unmasking:
            logger.warning("--unmasking has no effect without --do_masking (as in the authors' exp_sink.py): "
                           "evaluating the unmodified model")
        return NONE
    return "sink_top" if args.unmasking else "top"


EXPERIMENT = Experiment(
    name="sink",
    description="Sink experiment: answer quality when the top-k OCR (--task image) or retrieval (--task text) heads "
    "move part of their attention off the sink (key 0): p0 -> beta*p0, the rest spread over the other keys in "
    "proportion (mass preserved). The flags mean what they mean in the authors' exp_sink.py: "
    "--do_masking --unmasking applies the edit (head_set sink_top); --do_masking alone masks the top-k heads "
    "instead (head_set top); without --do_masking the unmodified model is evaluated (head_set none), "
    "with or without --unmasking.",
    edits={"top": masking.EXPERIMENT.edits["top"],
           "sink_top": Edit("top", redistributed, "--do_masking --unmasking", (BETA,))},
    head_set=head_set,
    add_flags=add_flags,
    default_datasets=("doc", "mdocs"),
    default_k=2,
    title="Sink redistribution",
)
