"""The question-to-evidence score: how much the question's tokens attend to the answer's evidence during the
prefill, before anything is generated.

Definition. Rows: the question's tokens in the prompt, at prefill (where the sample's question text sits after
the pages; :func:`ocr_heads.pipeline.sample_scoring.question_positions`). Events: the answer tokens of the output,
aligned by decoded text (the OCR score's events), each with the tiles of the answer characters it spells as its
target (every occurrence of the answer, 10% overlap). The event's value for a head is the mean, over the question
rows, of each row's probability on the target, times the answer recall (as every answer-event score here). A
head's score is the mean over all events.

Mean over the question rows, not the largest row: the question as a whole looks up the evidence (CoRe's
question-to-evidence mass), and one row's spike does not make a retrieval head. The ``prefill`` score, which
thresholds the largest row over every post-image row, is the other choice.

Follows the multimodal retrieval heads and CoRe line of work (question-to-evidence attention mass at prefill).

Recorded: at prefill only, per layer, the question rows' probabilities on every tile of the answer,
(heads, rows, tiles), computed in row chunks (:class:`ocr_heads.attention.probes.PrefillKeyMass`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ocr_heads.core.kinds import Alignment, KeyAggregation, Modality, QueryRows, Target
from ocr_heads.scores import rules
from ocr_heads.scores.base import DesignPoint, HeadScore, Observed, Recording, SampleValues, Settings
from ocr_heads.scores.mass import answer_keys, on_target, token_target
from ocr_heads.scores.registered.ocr import answer_events, answer_targets

if TYPE_CHECKING:
    from ocr_heads.data.samples import Sample
    from ocr_heads.models.base import ModelInputs


def recording(sample: Sample, inputs: ModelInputs, answer_ids: list[int], settings: Settings) -> Recording:
    from ocr_heads.attention.probes import PrefillKeyMass  # here: listing scores imports no torch

    if not inputs.question_positions:
        raise ValueError(f"sample {sample.id}: the question {sample.question!r} was not found after the last "
                         "image token of the prompt (needed for the question_mass score)")
    keys = answer_keys(answer_targets(sample, inputs, settings))
    return Recording(probes=(PrefillKeyMass(inputs.question_positions, keys),))


def question_values(mass: np.ndarray, keys: Sequence[int], events: list[rules.AnswerToken],
                    targets: list[set[int]], recall: float) -> np.ndarray:
    """Per event and head: the question rows' mean mass on the event's target, x recall; (events, layers, heads).

    ``mass``: (layers, heads, rows, len(keys)), the question rows' probabilities on prompt positions ``keys``."""
    mass = np.asarray(mass)
    values = np.zeros((len(events), *mass.shape[:2]), dtype=np.float64)
    if mass.shape[2] == 0:
        return values
    for row, token in enumerate(events):
        target = token_target(targets, token.chars)
        if target:
            values[row] = on_target(mass, keys, target).mean(-1) * recall  # (layers, heads, rows) -> mean of rows
    return values


def values(observed: Observed, settings: Settings) -> SampleValues:
    from ocr_heads.attention.probes import PrefillKeyMass

    recorded = observed.probe(PrefillKeyMass)
    events = answer_events(observed, settings.alignment)
    targets = answer_targets(observed.sample, observed.inputs, settings)
    result = question_values(recorded.mass.numpy(), recorded.keys, events, targets, observed.recall)
    return SampleValues(result, len(result), [observed.sample.answer[slice(*t.chars)] for t in events])


SCORE = HeadScore(
    name="question_mass",
    tag="qmass",
    modality=Modality.IMAGE,
    summary="the question's rows at prefill: their mean attention mass on the answer's tiles, x recall",
    recording=recording,
    values=values,
    alignments=(Alignment.PRODUCE,),
    design=DesignPoint(QueryRows.QUESTION, KeyAggregation.MASS, Target.EVIDENCE,
                       "multimodal retrieval heads and CoRe: question-to-evidence mass at prefill"),
)
