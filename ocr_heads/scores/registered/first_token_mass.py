"""The first-token evidence score: how much a head looks at the answer's evidence while the model commits to the
answer, i.e. at the row that produces the answer's first token.

Definition. One event per sample: the first answer token of the output (aligned by decoded text, as the OCR
score's events), read at the row that produced it. Target: every image tile that shows some character of the
answer (all of its characters, every occurrence, 10% overlap), not only the characters that token spells: at the
first token a reading head may already gather the whole answer. The event's value for a head is that row's
probability on the target, times the answer recall (as every answer-event score here, so values stay comparable
with the OCR score's). A sample whose output has no answer token has no event. A head's score is the mean over
samples.

Follows VERA's first-token evidence heads (heads whose attention at the first answer token lands on the
evidence; its "dynamic" OCR heads, against the "static" ones the OCR score finds over every answer token).

Recorded: the producing-row probe the decode-row mass scores share (:func:`ocr_heads.scores.mass.producing_probe`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ocr_heads.core.kinds import Alignment, KeyAggregation, Modality, QueryRows, Target
from ocr_heads.scores import rules
from ocr_heads.scores.base import DesignPoint, HeadScore, Observed, Recording, SampleValues, Settings
from ocr_heads.scores.mass import answer_keys, on_target, producing_probe
from ocr_heads.scores.registered.ocr import answer_events, answer_targets

if TYPE_CHECKING:
    from ocr_heads.data.samples import Sample
    from ocr_heads.models.base import ModelInputs


def recording(sample: Sample, inputs: ModelInputs, answer_ids: list[int], settings: Settings) -> Recording:
    return Recording(probes=(producing_probe(sample, inputs, settings),))


def first_token_values(attention: np.ndarray, keys: Sequence[int], events: list[rules.AnswerToken],
                       recall: float) -> np.ndarray:
    """(1, layers, heads): the first event's row's mass on every key in ``keys`` (the answer's tiles), x recall;
    (0, layers, heads) without an event. ``attention``: (steps, layers, heads, len(keys))."""
    attention = np.asarray(attention)
    rows = rules.event_rows(events, attention.shape[0], Alignment.PRODUCE)
    if not rows or not keys:
        return np.zeros((min(len(rows), 1), *attention.shape[1:3]), dtype=np.float64)
    _, step = rows[0]
    return (on_target(attention[step], keys, set(keys)) * recall)[None]


def values(observed: Observed, settings: Settings) -> SampleValues:
    from ocr_heads.attention.probes import ImageAttention

    attention = observed.probe(ImageAttention).attention.numpy()
    events = answer_events(observed, settings.alignment)
    keys = answer_keys(answer_targets(observed.sample, observed.inputs, settings))
    result = first_token_values(attention, keys, events, observed.recall)
    chars = [observed.sample.answer] if len(result) else []
    return SampleValues(result, len(result), chars)


SCORE = HeadScore(
    name="first_token_mass",
    tag="firstmass",
    modality=Modality.IMAGE,
    summary="the row producing the first answer token: its attention mass on all the answer's tiles, x recall",
    recording=recording,
    values=values,
    alignments=(Alignment.PRODUCE,),
    design=DesignPoint(QueryRows.FIRST_ANSWER, KeyAggregation.MASS, Target.EVIDENCE,
                       "VERA: first-token evidence heads"),
)
