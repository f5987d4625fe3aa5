"""Score one step1 sample with a registered head score: build the inputs the score's modality needs,
record what it asks for while generating greedily, and apply its pure rule (:mod:`ocr_heads.scores`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ocr_heads.attention import AttentionRecorder, Probe, StepRecord
from ocr_heads.core.kinds import Alignment, Modality
from ocr_heads.core.runner import SAMPLE_ERRORS
from ocr_heads.data.samples import Sample
from ocr_heads.models import ModelAdapter, ModelInputs
from ocr_heads.models.base import generated_pieces, left_padding
from ocr_heads.scores import HeadScore, Observed, Recording, SampleValues, Settings, rules


def answer_recall(adapter: ModelAdapter, answer: str, generated: list[int], alignment: str) -> float:
    """Recall of the answer in the output. ``authors`` keeps the released rule (the bare answer's ids);
    otherwise the answer counts in whichever tokenization the output has it (leading space or not)."""
    def encode(text: str) -> list[int]:
        return adapter.tokenizer(text, add_special_tokens=False)["input_ids"]

    if alignment == Alignment.AUTHORS:
        return rules.recall(encode(answer), generated)
    return rules.best_recall(rules.answer_id_variants(encode, answer, adapter.decode(generated)), generated)


@dataclass(frozen=True)
class Prepared:
    """One sample's prompt and what to record for it, before generation."""

    sample: Sample
    inputs: ModelInputs
    answer_ids: list[int]
    recording: Recording


@dataclass(frozen=True)
class SampleResult:
    """One scored sample: what is logged, plus what a verification rerun needs."""

    text: str  # the decoded output
    recall: float
    scored: SampleValues
    inputs: ModelInputs
    generated: list[int]
    record: StepRecord

    def log_record(self) -> dict:
        """The per-sample JSONL record: output, recall, events, hits and the value rows (layer-major heads)."""
        values = self.scored.values
        record = {"generated": self.text, "recall": self.recall}
        if self.inputs.image_tokens:
            record["image_tokens"] = self.inputs.tokens_per_page
        record.update(events=self.scored.events, hits=int((values > 0).sum()))
        if self.scored.event_chars:
            record["event_chars"] = self.scored.event_chars
        # Explicit width: a sample without events has (0, layers, heads) values, where -1 cannot be inferred.
        record["values"] = values.reshape(len(values), values.shape[1] * values.shape[2]).round(6).tolist()
        return record


def check_settings(score: HeadScore, settings: Settings) -> None:
    if settings.alignment not in score.alignments:
        raise ValueError(f"score {score.name} implements --alignment {' or '.join(score.alignments)}, "
                         f"not {settings.alignment!r}")


def prepare(adapter: ModelAdapter, sample: Sample, score: HeadScore, settings: Settings) -> Prepared:
    if score.modality == Modality.IMAGE:
        inputs = adapter.image_inputs(sample.load_pages(), sample.question)
    else:
        inputs = adapter.text_inputs(sample.context, sample.question)
    answer_ids = adapter.tokenizer(sample.answer, add_special_tokens=False)["input_ids"]
    return Prepared(sample, inputs, answer_ids, score.recording(sample, inputs, answer_ids, settings))


@dataclass(frozen=True)
class Recorded:
    """What one sample's generate produced under capture, in its own coordinates."""

    generated: list[int]  # new token ids
    record: StepRecord
    probe_results: dict[type[Probe], Any]  # probe class -> result, for the probes of the sample's Recording


def generate_recorded(adapter: ModelAdapter, recorder: AttentionRecorder, batch: list[Prepared],
                      max_new_tokens: int) -> list[Recorded]:
    """Generate the batch's prompts together (left-padded); per sample, what was recorded for it."""
    inputs = [p.inputs for p in batch]
    recordings = [p.recording for p in batch]
    # One generate runs one argmax range: the released OCR rule's is a property of the run's score.
    recorder.reset(max(i.prompt_length for i in inputs), [r.probes for r in recordings], left_padding(inputs),
                   exclude_last_prompt=any(r.exclude_last_prompt for r in recordings))
    generated = adapter.generate_batch(inputs, max_new_tokens)
    records = recorder.results([len(g) for g in generated])
    return [Recorded(ids, record, recorder.probe_results(i, steps=len(ids)))
            for i, (ids, record) in enumerate(zip(generated, records, strict=True))]


def finish(adapter: ModelAdapter, prepared: Prepared, recorded: Recorded, score: HeadScore,
           settings: Settings) -> SampleResult:
    """Apply the score's rule to one generated sample."""
    generated = recorded.generated
    recall = answer_recall(adapter, prepared.sample.answer, generated, settings.alignment)
    seen = Observed(prepared.sample, prepared.inputs, generated, generated_pieces(adapter, generated),
                    prepared.answer_ids, recall, recorded.record, prepared.recording, recorded.probe_results)
    return SampleResult(adapter.decode(generated), recall, score.values(seen, settings), prepared.inputs, generated,
                        recorded.record)


def score_batch(adapter: ModelAdapter, recorder: AttentionRecorder, samples: list[Sample], score: HeadScore,
                settings: Settings, max_new_tokens: int = 32) -> list[SampleResult | Exception]:
    """Score samples generated together under ``recorder`` (an active :func:`ocr_heads.attention.capture`);
    per sample its result or the error it failed with. Values equal scoring each sample alone."""
    check_settings(score, settings)
    outcomes: list[Prepared | Exception] = []
    for sample in samples:
        try:
            outcomes.append(prepare(adapter, sample, score, settings))
        except SAMPLE_ERRORS as err:
            outcomes.append(err)
    ready = [p for p in outcomes if isinstance(p, Prepared)]
    generations = iter(generate_recorded(adapter, recorder, ready, max_new_tokens) if ready else [])
    results: list[SampleResult | Exception] = []
    for outcome in outcomes:
        if isinstance(outcome, Exception):
            results.append(outcome)
            continue
        recorded = next(generations)
        try:
            results.append(finish(adapter, outcome, recorded, score, settings))
        except SAMPLE_ERRORS as err:
            results.append(err)
    return results


def score_sample(adapter: ModelAdapter, recorder: AttentionRecorder, sample: Sample, score: HeadScore,
                 settings: Settings, max_new_tokens: int = 32) -> SampleResult:
    """One sample alone (see :func:`score_batch`); raises what it failed with."""
    (result,) = score_batch(adapter, recorder, [sample], score, settings, max_new_tokens)
    if isinstance(result, Exception):
        raise result
    return result
