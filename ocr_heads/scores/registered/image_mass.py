"""The whole-image mass score: how much a head looks at the page, anywhere on it, while the answer is produced.

Definition. Events and rows are the OCR score's (``produce`` alignment): one event per answer token of the
output, read at the row that produced it. Target: every image token of every page. The event's value for a head
is that row's probability on the image, times the answer recall (as every answer-event score here, so it differs
from ``ocr_mass`` in the target only). A head's score is the mean over all events.

It finds heads that attend to the image rather than heads that read the answer's tiles: localisation and
"visual" heads, ranked by the share of their attention that goes to image tokens. Follows the localisation-heads
and visual-heads line of work (attention mass on the whole image).

The unregistered worked example of docs/extending.md (``page_mass``, with its own probe) asks a similar question
of every generated token; this score reads answer events only, through the producing-row probe the decode-row
mass scores share (:func:`ocr_heads.scores.mass.producing_probe`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ocr_heads.core.kinds import Alignment, KeyAggregation, Modality, QueryRows, Target
from ocr_heads.scores import rules
from ocr_heads.scores.base import DesignPoint, HeadScore, Observed, Recording, SampleValues, Settings
from ocr_heads.scores.mass import IMAGE_GROUP, producing_probe
from ocr_heads.scores.registered.ocr import answer_events

if TYPE_CHECKING:
    from ocr_heads.data.samples import Sample
    from ocr_heads.models.base import ModelInputs


def recording(sample: Sample, inputs: ModelInputs, answer_ids: list[int], settings: Settings) -> Recording:
    return Recording(probes=(producing_probe(sample, inputs, settings),))


def image_mass_values(image_mass: np.ndarray, events: list[rules.AnswerToken], recall: float) -> np.ndarray:
    """Per event and head: the producing row's mass on the image, x recall; (events, layers, heads).
    ``image_mass``: (steps, layers, heads); NaN (a layer without attention rows) reads as 0."""
    image_mass = np.asarray(image_mass, dtype=np.float64)
    rows = rules.event_rows(events, image_mass.shape[0], Alignment.PRODUCE)
    values = np.zeros((len(rows), *image_mass.shape[1:3]), dtype=np.float64)
    for row, (_, step) in enumerate(rows):
        values[row] = np.nan_to_num(image_mass[step], nan=0.0) * recall
    return values


def values(observed: Observed, settings: Settings) -> SampleValues:
    from ocr_heads.attention.probes import ImageAttention

    mass = observed.probe(ImageAttention).group_mass[IMAGE_GROUP].numpy()
    events = answer_events(observed, settings.alignment)
    result = image_mass_values(mass, events, observed.recall)
    chars = rules.event_chars(observed.sample.answer, events, mass.shape[0], Alignment.PRODUCE)
    return SampleValues(result, len(result), chars)


SCORE = HeadScore(
    name="image_mass",
    tag="imagemass",
    modality=Modality.IMAGE,
    summary="the producing decode row's attention mass on the whole image (every page), x recall",
    recording=recording,
    values=values,
    alignments=(Alignment.PRODUCE,),
    design=DesignPoint(QueryRows.PRODUCING, KeyAggregation.MASS, Target.IMAGE,
                       "localisation and visual heads: attention mass on the whole image"),
)
