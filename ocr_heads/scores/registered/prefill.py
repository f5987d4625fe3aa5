"""The prefill-read score: heads that read the answer's evidence into the prompt *before* decoding.

A model may copy what a tile shows into a later text position during the prefill, and produce the
answer from there: the toy model reads passkey digits 3-5 this way (docs/toy_model.md), and the
OCR score cannot credit it, since the decode rows then attend to text, not to the image.

Definition. Rows: the post-image prompt rows, i.e. prompt positions after the last image token up
to P-2 (the last prompt row, P-1, produces the first answer token: it is the OCR score's first
event row, not a prefill read). Events: the answer tokens of the output, aligned by decoded text
exactly as the OCR score's (``produce`` rule). Target of an event: the image tiles covering the
answer characters its token spells (every occurrence of the answer, 10% overlap). A head *hits*
when, for some post-image row, its attention mass on the target is at least :data:`THRESHOLD`
(0.5: the target tiles then make up most of what the head writes into that row). The event's value
is ``hit * recall``, as for the OCR score; a head's score is the mean over all events.

Recorded: at prefill only, per layer, the probabilities of the post-image rows on the union of all
answer characters' tiles, (heads, rows, tiles), computed in row chunks (the probe
:class:`ocr_heads.attention.probes.PrefillKeyMass`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ocr_heads.core.kinds import Alignment, KeyAggregation, Modality, QueryRows, Target
from ocr_heads.scores import rules
from ocr_heads.scores.base import DesignPoint, HeadScore, Observed, Recording, SampleValues, Settings
from ocr_heads.scores.registered.ocr import answer_events, answer_targets

if TYPE_CHECKING:
    import torch

    from ocr_heads.data.samples import Sample
    from ocr_heads.models.base import ModelInputs

THRESHOLD = 0.5


def post_image_rows(inputs: ModelInputs) -> list[int]:
    """Prompt positions after the last image token, the prompt's last position excluded."""
    if not inputs.image_tokens:
        return []
    last_image = max(tokens.positions[-1] for tokens in inputs.image_tokens)
    return list(range(last_image + 1, inputs.prompt_length - 1))


def recording(sample: Sample, inputs: ModelInputs, answer_ids: list[int], settings: Settings) -> Recording:
    from ocr_heads.attention.probes import PrefillKeyMass  # here: listing scores imports no torch

    targets = answer_targets(sample, inputs, settings)
    keys = sorted(set().union(*targets)) if targets else []
    return Recording(probes=(PrefillKeyMass(post_image_rows(inputs), keys),))


def prefill_values(
    mass: torch.Tensor | np.ndarray,
    keys: Sequence[int],
    events: list[rules.AnswerToken],
    targets: list[set[int]],
    recall: float,
    threshold: float = THRESHOLD,
) -> np.ndarray:
    """Per event and head: ``hit * recall``; (events, layers, heads).

    ``mass``: (layers, heads, rows, len(keys)) probabilities of the post-image rows on prompt positions
    ``keys``. A head hits when some row puts at least ``threshold`` on the tiles of the event's characters.
    """
    mass = np.asarray(mass, dtype=np.float64)
    column = {key: i for i, key in enumerate(keys)}
    values = np.zeros((len(events), mass.shape[0], mass.shape[1]), dtype=np.float64)
    if mass.shape[2] == 0:
        return values
    for row, token in enumerate(events):
        target = sorted(set().union(*targets[token.chars[0] : token.chars[1]]))
        if not target:
            continue
        on_target = mass[..., [column[t] for t in target]].sum(-1)  # (layers, heads, rows)
        values[row] = (on_target.max(-1) >= threshold) * recall
    return values


def values(observed: Observed, settings: Settings) -> SampleValues:
    from ocr_heads.attention.probes import PrefillKeyMass

    events = answer_events(observed, settings.alignment)
    recorded = observed.probe(PrefillKeyMass)
    mass = recorded.mass
    if mass is None:  # no post-image prompt rows: nothing was read at prefill
        mass = np.zeros((*observed.record.argmax.shape[1:], 0, 0))
    result = prefill_values(mass, recorded.keys, events,
                            answer_targets(observed.sample, observed.inputs, settings), observed.recall)
    return SampleValues(result, len(result), [observed.sample.answer[slice(*t.chars)] for t in events])


SCORE = HeadScore(
    name="prefill",
    tag="prefill",
    modality=Modality.IMAGE,
    summary=f"post-image prompt rows put >= {THRESHOLD} of their attention on the answer's tiles at prefill, "
    "x recall",
    recording=recording,
    values=values,
    alignments=(Alignment.PRODUCE,),
    meta={"mass_threshold": THRESHOLD, "rows": "post-image prompt rows (after the last image token, before the "
          "prompt's last row)"},
    # Mass, thresholded: a head hits when some row's mass on the target reaches THRESHOLD.
    design=DesignPoint(QueryRows.POST_IMAGE, KeyAggregation.MASS, Target.EVIDENCE,
                       "this project (the toy model's prefill readers, docs/toy_model.md)"),
)
