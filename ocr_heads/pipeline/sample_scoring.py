"""Score one step1 sample with registered head scores: build the inputs the scores' modality needs, record
what they ask for while generating greedily (once, for all of them), and apply each one's pure rule
(:mod:`ocr_heads.scores`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ocr_heads.attention import AttentionRecorder, Probe, StepRecord
from ocr_heads.core.kinds import Alignment, Modality
from ocr_heads.core.runner import SAMPLE_ERRORS
from ocr_heads.data.samples import Sample
from ocr_heads.models import ModelAdapter, ModelInputs
from ocr_heads.models.base import left_padding
from ocr_heads.scores import HeadScore, Observed, Recording, SampleValues, Settings, rules


def generated_pieces(adapter: ModelAdapter, generated: list[int]) -> list[str]:
    """The text each generated token adds (incremental decoding keeps multi-byte characters whole)."""
    pieces, previous = [], ""
    for k in range(len(generated)):
        text = adapter.decode(generated[: k + 1])
        pieces.append(text[len(previous) :] if text.startswith(previous) else text)
        previous = text
    return pieces


def answer_recall(adapter: ModelAdapter, answer: str, generated: list[int], alignment: str) -> float:
    """Recall of the answer in the output. ``authors`` keeps the released rule (the bare answer's ids);
    otherwise the answer counts in whichever tokenization the output has it (leading space or not)."""
    def encode(text: str) -> list[int]:
        return adapter.tokenizer(text, add_special_tokens=False)["input_ids"]

    if alignment == Alignment.AUTHORS:
        return rules.recall(encode(answer), generated)
    return rules.best_recall(rules.answer_id_variants(encode, answer, adapter.decode(generated)), generated)


def question_positions(adapter: ModelAdapter, inputs: ModelInputs, question: str) -> list[int]:
    """The prompt positions of the question's tokens: after the last image token, the tokens whose decoded text
    overlaps the question's last occurrence there (every adapter puts the question after the pages); [] when
    the decoded prompt does not contain it."""
    start = max((tokens.positions[-1] for tokens in inputs.image_tokens), default=-1) + 1
    pieces = generated_pieces(adapter, inputs.input_ids[0, start:].tolist())
    text, wanted = "".join(pieces), question.strip()
    at = text.rfind(wanted) if wanted else -1
    if at < 0:
        return []
    positions, cursor = [], 0
    for offset, piece in enumerate(pieces):
        if piece and cursor < at + len(wanted) and cursor + len(piece) > at:
            positions.append(start + offset)
        cursor += len(piece)
    return positions


def union(recordings: dict[str, Recording]) -> Recording:
    """What one generate records for several scores: each distinct probe once (equal declarations are one), in
    the order the scores ask for them. The decode argmax has one range per generate, so the scores must agree
    on it."""
    probes: list[Probe] = []
    for recording in recordings.values():
        probes.extend(probe for probe in recording.probes if probe not in probes)
    ranges = {recording.exclude_last_prompt for recording in recordings.values()}
    if len(ranges) > 1:
        raise ValueError(f"scores {', '.join(recordings)} take the decode argmax over different prompt ranges "
                         "(exclude_last_prompt): score them in separate runs")
    return Recording(tuple(probes), exclude_last_prompt=ranges.pop() if ranges else False)


@dataclass(frozen=True)
class Prepared:
    """One sample's prompt and what to record for it, before generation: per score its own recording, and their
    union, which the generate records."""

    sample: Sample
    inputs: ModelInputs
    answer_ids: list[int]
    recordings: dict[str, Recording]  # score name -> what that score asked for

    @property
    def recording(self) -> Recording:
        return union(self.recordings)


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


def prepare(adapter: ModelAdapter, sample: Sample, scores: Sequence[HeadScore], settings: Settings) -> Prepared:
    """The sample's prompt in the scores' modality (one for all of them) and what each score records."""
    if scores[0].modality == Modality.IMAGE:
        inputs = adapter.image_inputs(sample.load_pages(), sample.question)
        inputs.question_positions = question_positions(adapter, inputs, sample.question)
    else:
        inputs = adapter.text_inputs(sample.context, sample.question)
    answer_ids = adapter.tokenizer(sample.answer, add_special_tokens=False)["input_ids"]
    recordings = {score.name: score.recording(sample, inputs, answer_ids, settings) for score in scores}
    for name, recording in recordings.items():
        kinds = [type(probe).__name__ for probe in recording.probes]
        if len(set(kinds)) != len(kinds):  # a score finds its results by probe class
            raise ValueError(f"score {name} declares several probes of one class: {kinds}")
    return Prepared(sample, inputs, answer_ids, recordings)


@dataclass(frozen=True)
class Recorded:
    """What one sample's generate produced under capture, in its own coordinates."""

    generated: list[int]  # new token ids
    record: StepRecord
    probe_results: dict[Probe, Any]  # probe (declaration) -> its result, for the probes of the sample's Recording

    def results_for(self, recording: Recording) -> dict[type[Probe], Any]:
        """Probe class -> result, for the probes one score declared (what its ``observed.probe`` reads)."""
        return {type(probe): self.probe_results[probe] for probe in recording.probes}


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
    return [Recorded(ids, record, dict(zip(recording.probes, recorder.probe_outputs(i, steps=len(ids)), strict=True)))
            for i, (ids, record, recording) in enumerate(zip(generated, records, recordings, strict=True))]


def finish(adapter: ModelAdapter, prepared: Prepared, recorded: Recorded, scores: Sequence[HeadScore],
           settings: Settings) -> dict[str, SampleResult | Exception]:
    """Apply each score's rule to one generated sample: score name -> its result, or the error its rule failed
    with. What the scores share (recall, the output's text pieces) is worked out once."""
    generated = recorded.generated
    recall = answer_recall(adapter, prepared.sample.answer, generated, settings.alignment)
    pieces, text = generated_pieces(adapter, generated), adapter.decode(generated)
    results: dict[str, SampleResult | Exception] = {}
    for score in scores:
        recording = prepared.recordings[score.name]
        seen = Observed(prepared.sample, prepared.inputs, generated, pieces, prepared.answer_ids, recall,
                        recorded.record, recording, recorded.results_for(recording))
        try:
            results[score.name] = SampleResult(text, recall, score.values(seen, settings), prepared.inputs, generated,
                                               recorded.record)
        except SAMPLE_ERRORS as err:
            results[score.name] = err
    return results


def score_batch_scores(adapter: ModelAdapter, recorder: AttentionRecorder, samples: list[Sample],
                       scores: Sequence[HeadScore], settings: Settings,
                       max_new_tokens: int = 32) -> list[dict[str, SampleResult | Exception] | Exception]:
    """Score samples generated together under ``recorder`` (an active :func:`ocr_heads.attention.capture`) with
    several scores of one modality at once: each sample is generated once, recording the union of what the scores
    ask for (:func:`union`). Per sample: score name -> its result (or the error its rule failed with), or the
    error the sample failed with before any score could run. Each score's values equal scoring it alone."""
    if len({score.modality for score in scores}) != 1:
        raise ValueError(f"scores {', '.join(s.name for s in scores)} read different forms of a sample (image and "
                         "text): score them in separate runs")
    for score in scores:
        check_settings(score, settings)
    outcomes: list[Prepared | Exception] = []
    for sample in samples:
        try:
            outcomes.append(prepare(adapter, sample, scores, settings))
        except SAMPLE_ERRORS as err:
            outcomes.append(err)
    ready = [p for p in outcomes if isinstance(p, Prepared)]
    generations = iter(generate_recorded(adapter, recorder, ready, max_new_tokens) if ready else [])
    results: list[dict[str, SampleResult | Exception] | Exception] = []
    for outcome in outcomes:
        if isinstance(outcome, Exception):
            results.append(outcome)
            continue
        recorded = next(generations)
        try:
            results.append(finish(adapter, outcome, recorded, scores, settings))
        except SAMPLE_ERRORS as err:
            results.append(err)
    return results


def score_batch(adapter: ModelAdapter, recorder: AttentionRecorder, samples: list[Sample], score: HeadScore,
                settings: Settings, max_new_tokens: int = 32) -> list[SampleResult | Exception]:
    """Score samples generated together under ``recorder`` (an active :func:`ocr_heads.attention.capture`);
    per sample its result or the error it failed with. Values equal scoring each sample alone."""
    outcomes = score_batch_scores(adapter, recorder, samples, [score], settings, max_new_tokens)
    return [outcome if isinstance(outcome, Exception) else outcome[score.name] for outcome in outcomes]


def score_sample(adapter: ModelAdapter, recorder: AttentionRecorder, sample: Sample, score: HeadScore,
                 settings: Settings, max_new_tokens: int = 32) -> SampleResult:
    """One sample alone (see :func:`score_batch`); raises what it failed with."""
    (result,) = score_batch(adapter, recorder, [sample], score, settings, max_new_tokens)
    if isinstance(result, Exception):
        raise result
    return result
