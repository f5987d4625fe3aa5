"""The retrieval score (design §1; Wu et al. 2024): the sample as plain text; per answer token, a head hits
when the argmax of the decode row that produced it lies in the needle on the same token id. One row per
sample: hits / answer tokens generated. ``--alignment authors`` applies the released rule (every
answer-token position, prompt or output, read at its own row; decode rows take their argmax over prompt
positions [0, P-1), as the released OCR rule does)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ocr_heads.core.kinds import Alignment, KeyAggregation, Modality, QueryRows, Target
from ocr_heads.scores import rules
from ocr_heads.scores.base import DesignPoint, HeadScore, Observed, Recording, SampleValues, Settings

if TYPE_CHECKING:
    from ocr_heads.data.samples import Sample
    from ocr_heads.models.base import ModelInputs


def recording(sample: Sample, inputs: ModelInputs, answer_ids: list[int], settings: Settings) -> Recording:
    if settings.alignment == Alignment.AUTHORS:
        from ocr_heads.attention.probes import PromptRowArgmax  # here: listing scores imports no torch

        answer_set = set(answer_ids)
        rows = tuple(p for p, t in enumerate(inputs.input_ids[0].tolist()) if t in answer_set)
        # The released text script slices attn[row, :-len(generated)] like its OCR script: key P-1 is left out.
        return Recording(probes=(PromptRowArgmax(rows),), exclude_last_prompt=True)
    if sample.needle_span is None:
        raise ValueError(f"sample {sample.id} has no needle_span (needed for the retrieval score)")
    return Recording()


def values(observed: Observed, settings: Settings) -> SampleValues:
    argmax, generated, answer_ids = observed.record.argmax, observed.generated, observed.answer_ids
    if settings.alignment == Alignment.AUTHORS:
        from ocr_heads.attention.probes import PromptRowArgmax

        prompt_argmax = observed.probe(PromptRowArgmax).by_row
        value = rules.retrieval_value_authors(prompt_argmax, argmax, observed.prompt_ids, generated, answer_ids)
        events = len(prompt_argmax) + sum(t in set(answer_ids) for t in generated[:-1])
    else:
        tokens = rules.align_answer_tokens(observed.pieces, observed.sample.answer)
        needle = set(observed.inputs.context_tokens(*observed.sample.needle_span))
        value = rules.retrieval_value(argmax, observed.prompt_ids, generated, tokens, needle)
        events = len(tokens)
    return SampleValues(np.asarray(value)[None], events)


SCORE = HeadScore(
    name="retrieval",
    tag="te",
    modality=Modality.TEXT,
    summary="Wu et al.'s retrieval score: the producing decode row copies the answer token from the needle",
    recording=recording,
    values=values,
    design=DesignPoint(QueryRows.PRODUCING, KeyAggregation.ARGMAX, Target.NEEDLE,
                       "Wu et al. 2024, Retrieval Head Mechanistically Explains Long-Context Factuality"),
)
