"""The paper's OCR score (design §1): per answer-token event, a head hits when the argmax of the decode
row that produced the token lies on the image tiles showing the characters the token spells; the
event's value is ``hit * recall``. ``--alignment authors`` applies the released rules instead (see
:mod:`ocr_heads.scores.rules`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ocr_heads.core.kinds import Alignment, KeyAggregation, Modality, QueryRows, Target
from ocr_heads.scores import rules
from ocr_heads.scores.base import DesignPoint, HeadScore, Observed, Recording, SampleValues, Settings

if TYPE_CHECKING:
    from ocr_heads.data.samples import Sample
    from ocr_heads.models.base import ModelInputs


def answer_events(observed: Observed, alignment: str) -> list[rules.AnswerToken]:
    """The generated tokens that are answer events, with the answer characters each spells."""
    if alignment == Alignment.AUTHORS:
        # Released rule: any generated token whose id is in the answer is an event, paired in order with the
        # answer characters.
        answer_set = set(observed.answer_ids)
        tokens = [i for i, t in enumerate(observed.generated) if t in answer_set]
        return [rules.AnswerToken(i, (k, k + 1)) for k, i in enumerate(tokens[: len(observed.sample.answer)])]
    return rules.align_answer_tokens(observed.pieces, observed.sample.answer)


def answer_targets(sample: Sample, inputs: ModelInputs, settings: Settings) -> list[set[int]]:
    """Per answer character, the prompt positions of the image tiles that show it."""
    evidence = rules.scored_occurrences(sample.all_evidence(), settings.alignment)
    threshold = rules.overlap_threshold(settings.alignment, settings.overlap)
    return rules.char_targets(evidence, inputs.image_tokens, threshold, rule=settings.alignment)


def recording(sample: Sample, inputs: ModelInputs, answer_ids: list[int], settings: Settings) -> Recording:
    # The released code's argmax leaves out the prompt's last position (see AttentionRecorder.reset).
    return Recording(exclude_last_prompt=settings.alignment == Alignment.AUTHORS)


def values(observed: Observed, settings: Settings) -> SampleValues:
    tokens = answer_events(observed, settings.alignment)
    argmax = observed.record.argmax
    targets = answer_targets(observed.sample, observed.inputs, settings)
    result = rules.ocr_values(argmax, tokens, targets, observed.recall, settings.alignment)
    chars = rules.event_chars(observed.sample.answer, tokens, argmax.shape[0], settings.alignment)
    return SampleValues(result, len(result), chars)


SCORE = HeadScore(
    name="ocr",
    tag="fg",
    other_tags=("cg",),
    modality=Modality.IMAGE,
    summary="the paper's OCR score: the producing decode row's argmax on the answer's tiles, x recall",
    recording=recording,
    values=values,
    design=DesignPoint(QueryRows.PRODUCING, KeyAggregation.ARGMAX, Target.EVIDENCE,
                       "Baek et al. 2025, OCR heads (arXiv 2505.15865)"),
)
