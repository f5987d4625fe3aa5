"""What a head score is: its names, the modality it reads, what it records, and a pure scoring rule.

A score module declares one :class:`HeadScore`. The runner (:mod:`ocr_heads.pipeline.sample_scoring`) builds the
sample's inputs for the score's modality, asks :attr:`HeadScore.recording` what to record beyond the
decode rows (which are always recorded): the probes it needs (:mod:`ocr_heads.attention.probes`),
generates greedily under capture, and hands everything it observed, the probes' results included, to
:attr:`HeadScore.values`, a pure function: no model, no tokenizer, so every rule is testable on a
hand-built case.

Score modules import probe classes inside their functions, not at the top: the registry lists scores
without importing torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from ocr_heads.core.kinds import Alignment, KeyAggregation, Modality, QueryRows, Target

if TYPE_CHECKING:  # the registry stays importable without torch (score files, reports)
    from ocr_heads.attention import Probe, StepRecord
    from ocr_heads.data.samples import Sample
    from ocr_heads.models.base import ModelInputs

MODALITIES = tuple(Modality)
R = TypeVar("R")


@dataclass(frozen=True)
class Settings:
    """The run's scoring settings (step2 flags)."""

    alignment: Alignment = Alignment.PRODUCE
    overlap: float | None = None  # tile-overlap threshold; None: the alignment rule's own


@dataclass(frozen=True)
class Recording:
    """What to record while one sample generates, beyond the decode rows' argmax and sink."""

    probes: tuple[Probe, ...] = ()  # at most one of each class; positions in the sample's own coordinates
    exclude_last_prompt: bool = False  # decode argmax over prompt positions [0, P-1) (the released OCR code)


@dataclass(frozen=True)
class Observed:
    """Everything one sample's run produced: the input of a score's pure rule."""

    sample: Sample
    inputs: ModelInputs
    generated: list[int]  # new token ids
    pieces: list[str]  # the text each generated token adds
    answer_ids: list[int]  # the bare answer's token ids
    recall: float  # answer recall in the output (under the run's alignment rule)
    record: StepRecord  # decode rows: (steps, layers, heads) argmax and sink
    recording: Recording
    probe_results: Mapping[type[Probe], Any] = field(default_factory=dict)  # probe class -> its result

    @property
    def prompt_ids(self) -> list[int]:
        return self.inputs.input_ids[0].tolist()

    def probe(self, kind: type[Probe[R]]) -> R:
        """The result of the recording's probe of class ``kind``."""
        if kind not in self.probe_results:
            raise KeyError(f"sample {self.sample.id}: its recording has no {kind.__name__} probe")
        return self.probe_results[kind]


@dataclass(frozen=True)
class SampleValues:
    """A sample's per-head values: one row per event, or one row per sample for a per-sample score."""

    values: np.ndarray  # (rows, layers, heads)
    events: int  # answer-token events the rows stand for
    event_chars: list[str] = field(default_factory=list)  # per row, the answer characters its event spells


@dataclass(frozen=True)
class DesignPoint:
    """Where a score sits in the head-score design space (docs/protocol.md): which rows it reads, how a row's
    attention becomes a number for the target, what the target is, and the paper whose definition it follows.
    How event values become a head's score (mean or frequency) is chosen when heads are ranked, not here."""

    rows: QueryRows
    keys: KeyAggregation
    target: Target
    paper: str  # the work whose definition it follows, as docs/protocol.md cites it

    def __post_init__(self) -> None:
        # Given as plain strings too: a ValueError for any word outside the axes.
        object.__setattr__(self, "rows", QueryRows(self.rows))
        object.__setattr__(self, "keys", KeyAggregation(self.keys))
        object.__setattr__(self, "target", Target(self.target))


@dataclass(frozen=True)
class HeadScore:
    """One registered head score (see :mod:`ocr_heads.scores`)."""

    name: str  # ``--score NAME``; also the ``kind`` in the score file's sidecar
    tag: str  # file tag: OUT/<modality>/MODEL_<tag>.json
    modality: Modality  # image (pages) or text (the context as plain text)
    summary: str  # one line for listings
    recording: Callable[[Sample, ModelInputs, list[int], Settings], Recording]
    values: Callable[[Observed, Settings], SampleValues]
    alignments: tuple[Alignment, ...] = (Alignment.PRODUCE, Alignment.AUTHORS)  # the --alignment rules it implements
    other_tags: tuple[str, ...] = ()  # further tags its files carry in the authors' release (OCR: "cg")
    meta: dict = field(default_factory=dict)  # extra sidecar entries (its fixed parameters)
    design: DesignPoint = field(kw_only=True)  # its point in the design space (required, by keyword)

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"score {self.name}: modality must be one of {MODALITIES}, got {self.modality!r}")
        if not isinstance(self.design, DesignPoint):
            raise ValueError(f"score {self.name}: design must be a DesignPoint, got {self.design!r}")
