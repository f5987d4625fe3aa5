"""The decode-row mass score: the OCR score's events, with the attention *mass* on the answer's tiles in place
of the argmax hit.

Definition. Events, targets and rows are the OCR score's (``produce`` alignment): one event per answer token of
the output (aligned by decoded text), its target the image tiles covering the answer characters the token spells
(every occurrence of the answer, 10% overlap), its row the one that *produced* the token (the prompt's last row
for the first generated token, then decode rows). The event's value for a head is the probability that row puts
on the target, times the sample's answer recall: ``mass * recall``. A head's score is the mean over all events.

Why ``x recall``: to stay comparable with the OCR score, whose values are ``hit * recall``; the two differ only
in the key aggregation (argmax hit, 0 or 1, against the mass, in [0, 1]), so a head that always puts its largest
weight on the target scores at least its mass under both. The mass credits a head that spreads its weight over
the tiles without one of them being its single largest weight (and gives partial credit where the argmax gives
none).

Follows the region-sum variant of the visual-retrieval-heads study (2026), which compares the argmax on the
evidence with the attention summed over the evidence region, and finds the sum the better detector.

Recorded: the producing-row probe the decode-row mass scores share (:func:`ocr_heads.scores.mass.producing_probe`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ocr_heads.core.kinds import Alignment, KeyAggregation, Modality, QueryRows, Target
from ocr_heads.scores import rules
from ocr_heads.scores.base import DesignPoint, HeadScore, Observed, Recording, SampleValues, Settings
from ocr_heads.scores.mass import answer_keys, on_target, producing_probe, token_target
from ocr_heads.scores.registered.ocr import answer_events, answer_targets

if TYPE_CHECKING:
    from ocr_heads.data.samples import Sample
    from ocr_heads.models.base import ModelInputs


def recording(sample: Sample, inputs: ModelInputs, answer_ids: list[int], settings: Settings) -> Recording:
    return Recording(probes=(producing_probe(sample, inputs, settings),))


def ocr_mass_values(attention: np.ndarray, keys: Sequence[int], events: list[rules.AnswerToken],
                    targets: list[set[int]], recall: float) -> np.ndarray:
    """Per event and head: ``mass * recall``; (events, layers, heads).

    ``attention``: (steps, layers, heads, len(keys)), each producing row's probabilities on prompt positions
    ``keys``. An event reads the row that produced its token (step = the token's index)."""
    attention = np.asarray(attention)
    rows = rules.event_rows(events, attention.shape[0], Alignment.PRODUCE)
    values = np.zeros((len(rows), *attention.shape[1:3]), dtype=np.float64)
    for row, (token, step) in enumerate(rows):
        target = token_target(targets, token.chars)
        if target:
            values[row] = on_target(attention[step], keys, target) * recall
    return values


def values(observed: Observed, settings: Settings) -> SampleValues:
    from ocr_heads.attention.probes import ImageAttention

    attention = observed.probe(ImageAttention).attention.numpy()
    events = answer_events(observed, settings.alignment)
    targets = answer_targets(observed.sample, observed.inputs, settings)
    result = ocr_mass_values(attention, answer_keys(targets), events, targets, observed.recall)
    chars = rules.event_chars(observed.sample.answer, events, attention.shape[0], Alignment.PRODUCE)
    return SampleValues(result, len(result), chars)


SCORE = HeadScore(
    name="ocr_mass",
    tag="ocrmass",
    modality=Modality.IMAGE,
    summary="the producing decode row's attention mass on the answer's tiles, x recall (the OCR score with mass "
    "for argmax)",
    recording=recording,
    values=values,
    alignments=(Alignment.PRODUCE,),
    design=DesignPoint(QueryRows.PRODUCING, KeyAggregation.MASS, Target.EVIDENCE,
                       "the visual-retrieval-heads study (2026): its region-sum variant"),
)
