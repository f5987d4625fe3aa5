"""What a head score is: its names, the modality it reads, what it records, and a pure scoring rule.

A score module declares one :class:`HeadScore`. The runner (:mod:`ocr_heads.pipeline.sample_scoring`) builds the
sample's inputs for the score's modality, asks :attr:`HeadScore.recording` what to record beyond the
decode rows (which are always recorded), generates greedily under capture, and hands everything it
observed to :attr:`HeadScore.values`, a pure function: no model, no tokenizer, so every rule is
testable on a hand-built case.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the registry stays importable without torch (score files, reports)
    import torch

    from ocr_heads.attention import StepRecord
    from ocr_heads.data.samples import Sample
    from ocr_heads.models.base import ModelInputs

MODALITIES = ("image", "text")


@dataclass(frozen=True)
class Settings:
    """The run's scoring settings (step2 flags)."""

    alignment: str = "produce"
    overlap: float | None = None  # tile-overlap threshold; None: the alignment rule's own


@dataclass(frozen=True)
class Recording:
    """What to record while one sample generates, beyond the decode rows' argmax and sink."""

    prompt_rows: tuple[int, ...] = ()  # prefill rows whose own argmax over the prompt is recorded
    mass_rows: tuple[int, ...] = ()  # prefill rows whose probabilities on ``mass_keys`` are recorded
    mass_keys: tuple[int, ...] = ()
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
    prompt_argmax: dict[int, torch.Tensor] = field(default_factory=dict)  # prompt row -> (layers, heads)
    key_mass: torch.Tensor | None = None  # (layers, heads, mass_rows, mass_keys)

    @property
    def prompt_ids(self) -> list[int]:
        return self.inputs.input_ids[0].tolist()


@dataclass(frozen=True)
class SampleValues:
    """A sample's per-head values: one row per event, or one row per sample for a per-sample score."""

    values: np.ndarray  # (rows, layers, heads)
    events: int  # answer-token events the rows stand for
    event_chars: list[str] = field(default_factory=list)  # per row, the answer characters its event spells


@dataclass(frozen=True)
class HeadScore:
    """One registered head score (see :mod:`ocr_heads.scores`)."""

    name: str  # ``--score NAME``; also the ``kind`` in the score file's sidecar
    tag: str  # file tag: OUT/<modality>/MODEL_<tag>.json
    modality: str  # "image" (pages) or "text" (the context as plain text)
    summary: str  # one line for listings
    recording: Callable[[Sample, ModelInputs, list[int], Settings], Recording]
    values: Callable[[Observed, Settings], SampleValues]
    alignments: tuple[str, ...] = ("produce", "authors")  # the --alignment rules it implements
    other_tags: tuple[str, ...] = ()  # further tags its files carry in the authors' release (OCR: "cg")
    meta: dict = field(default_factory=dict)  # extra sidecar entries (its fixed parameters)

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"score {self.name}: modality must be one of {MODALITIES}, got {self.modality!r}")
