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
from typing import TYPE_CHECKING

from ocr_heads.core.registry import lazy
from ocr_heads.experiments import masking
from ocr_heads.experiments.base import FINE_GRAINED, NONE, Edit, Experiment, Option, switches

if TYPE_CHECKING:
    from ocr_heads.models.base import ModelAdapter

logger = logging.getLogger(__name__)

# Imported on first use: the report lists this experiment without loading torch.
redistribute_sink_heads = lazy("ocr_heads.attention.edits:redistribute_sink_heads")
# The values of ocr_heads.attention.edits' BETA_DEFAULT and BETA_RANGE, written out so that declaring the
# option needs no torch (tests/test_experiment_registry.py checks that they agree).
BETA = Option("beta", 0.4, 0.0, 1.0, help="fraction of the sink probability kept", symbol="B")


def redistributed(adapter: ModelAdapter, heads: list[str], options: Mapping[str, float]) -> AbstractContextManager:
    """The sink context: ``heads`` keep ``beta`` of their key-0 probability and spread the rest."""
    return redistribute_sink_heads(adapter, heads, options[BETA.name])


add_flags = switches(
    ("do_masking", "intervene on the top-k heads: the sink edit with --unmasking, else masking "
     "(without it: baseline, no edit)"),
    ("unmasking", "with --do_masking: redistribute the sink instead of masking (alone: no effect)"),
    FINE_GRAINED,
)


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
