"""Edits over each sample's own key groups (:mod:`ocr_heads.experiments.regions`): the heads cut off the image,
off the answer's evidence or off the text, as the masking experiment's ``--mask_mode`` asks.

How per-sample key sets reach the edit: the context yields a :class:`RegionKeys` (an
:class:`ocr_heads.experiments.base.BatchKeys`); the runner hands it every batch's examples and model inputs before
generating that batch, and it sets the reweighting's key sets, sample by sample, in each sample's own positions
(the edit maps them past left padding). Nothing else in the runner knows which keys an edit reads.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ocr_heads.experiments.regions import SINK, evidence_positions, image_positions

if TYPE_CHECKING:
    from ocr_heads.attention.reweighting import AttentionReweighting
    from ocr_heads.models.base import ModelAdapter, ModelInputs
    from ocr_heads.tasks import Example


# --mask_mode -> (the reweighting, the key group it acts on). text_keys blocks every non-image key (the question,
# the template's special tokens, vision markers, the tokens generated so far) except the sink: keeping only the
# image and the sink says exactly that, and leaves the sink question to exp_sink.
KEY_MODES = {
    "image_keys": ("block", "image"),
    "evidence_keys": ("block", "evidence"),
    "text_keys": ("keep", "image+sink"),
}


class RegionKeys:
    """The per-sample key sets of one key mode, set on the reweighting before each batch."""

    def __init__(self, reweighting: AttentionReweighting, group: str) -> None:
        self.reweighting = reweighting
        self.group = group

    def positions(self, example: Example, inputs: ModelInputs) -> list[int]:
        if self.group == "image":
            return image_positions(inputs)
        if self.group == "image+sink":
            return [SINK, *image_positions(inputs)]
        return evidence_positions(inputs, example.meta.get("evidence"), f"example {example.id}")

    def prepare_batch(self, examples: Sequence[Example], inputs: Sequence[ModelInputs]) -> None:
        # Imported here, as below: the experiment registry imports every module of this package without torch.
        from ocr_heads.attention.reweighting import KeySet

        self.reweighting.set_keys(KeySet.of_samples([self.positions(example, given)
                                                     for example, given in zip(examples, inputs, strict=True)]))


@contextmanager
def blocked_from(adapter: ModelAdapter, heads: list[str], mode: str) -> Iterator[RegionKeys]:
    """``heads`` cut off a key group of every sample (``mode``: a key of :data:`KEY_MODES`) at every query row,
    prefill and decode; the rest of each row renormalised."""
    if mode not in KEY_MODES:
        raise ValueError(f"unknown key mode {mode!r} (known: {', '.join(KEY_MODES)})")
    from ocr_heads.attention.reweighting import Reweight, reweighted_heads

    rule, group = KEY_MODES[mode]
    with reweighted_heads(adapter, heads, Reweight(rule), rows="all") as reweighting:
        yield RegionKeys(reweighting, group)
