"""Head extraction (step3): which heads count as OCR / retrieval heads.

Two rules, both parameterised by ``min_score`` and ``min_frequency`` (0.1 each):

- ``documented`` (default, the paper's text): mean >= min_score and the fraction of NON-zero events
  >= min_frequency.
- ``authors`` (their released step3 code, reproduced exactly): mean >= min_score and the fraction of ZERO
  events > min_frequency (strictly). This drops the strongest, always-on heads (e.g. the Qwen2-VL-2B text
  heads that score 0.995 by attending to the token itself): 40 heads instead of the documented rule's 58 on
  their Qwen2-VL-2B text file.

Rankings are by mean score, highest first; ties keep layer-major order (what a stable sort of the authors'
insertion-ordered dict gives).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ocr_heads.scorefile import ScoreFile, mean_of, nonzero_fraction

RULES = ("documented", "authors")
DEFAULT_MIN_SCORE = 0.1
DEFAULT_MIN_FREQUENCY = 0.1


@dataclass(frozen=True)
class SelectedHead:
    head: str
    score: float
    frequency: float


def _zero_count_as_authors(values: list[float]) -> int:
    # Their code counts zeros on torch.tensor(values), i.e. in float32: values that underflow to 0 in float32
    # count as zeros too. Irrelevant for real scores in [0, 1], but it keeps "exactly" exact.
    return int(np.count_nonzero(np.asarray(values, dtype=np.float32) == 0)) if values else 0


def passes(
    values: list[float],
    rule: str = "documented",
    min_score: float = DEFAULT_MIN_SCORE,
    min_frequency: float = DEFAULT_MIN_FREQUENCY,
) -> bool:
    """Whether one head's event list is selected under ``rule``."""
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose one of {', '.join(RULES)}")
    if not values:
        return False
    if rule == "authors":
        return _zero_count_as_authors(values) > min_frequency * len(values) and mean_of(values) >= min_score
    return nonzero_fraction(values) >= min_frequency and mean_of(values) >= min_score


def select_heads(
    scores: ScoreFile,
    rule: str = "documented",
    min_score: float = DEFAULT_MIN_SCORE,
    min_frequency: float = DEFAULT_MIN_FREQUENCY,
) -> list[SelectedHead]:
    """Selected heads ranked by mean score (highest first, ties in layer-major order)."""
    chosen = [
        SelectedHead(head, scores.means[head], nonzero_fraction(values))
        for head, values in scores.per_head.items()
        if passes(values, rule, min_score, min_frequency)
    ]
    return sorted(chosen, key=lambda selected: -selected.score)  # sorted() is stable: ties stay layer-major


def gated_scores(
    scores: ScoreFile, rule: str = "documented", min_frequency: float = DEFAULT_MIN_FREQUENCY
) -> dict[str, float]:
    """Every head's mean, set to 0 where the frequency test of ``rule`` fails (no score threshold).

    This is the dict the authors rank for their top-k masking and sink heads.
    """
    return {
        head: scores.means[head] if passes(values, rule, -np.inf, min_frequency) else 0.0
        for head, values in scores.per_head.items()
    }


def top_k_heads(
    scores: ScoreFile, k: int, rule: str = "documented", min_frequency: float = DEFAULT_MIN_FREQUENCY
) -> list[str]:
    """The k best heads by gated score, ties in layer-major order (as the authors' stable sort gives)."""
    gated = gated_scores(scores, rule, min_frequency)
    return [head for head, _ in sorted(gated.items(), key=lambda item: -item[1])[:k]]


def selection_record(
    scores: ScoreFile, selected: list[SelectedHead], rule: str, min_score: float, min_frequency: float
) -> dict[str, Any]:
    """The JSON written by step3: the ranked heads plus what produced them."""
    return {
        "heads": [asdict(head) for head in selected],
        "rule": rule,
        "min_score": min_score,
        "min_frequency": min_frequency,
        "source": str(scores.path) if scores.path else None,
        "kind": scores.kind,
        "model": scores.model,
        "num_layers": scores.num_layers,
        "num_heads": scores.num_heads,
        "num_selected": len(selected),
    }
