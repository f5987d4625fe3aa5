"""Numbers behind the report: sparsity, overlap, correlations, cumulative mass, case-study similarity.

Pure functions over plain dicts/arrays (no plotting), so tests can check them by hand.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

# The paper's score buckets (exp_analysis): exactly 0, (0, 0.1), [0.1, 0.3), [0.3, 0.5), [0.5, 1].
BUCKETS = (
    ("0", None, None),
    ("(0, 0.1)", 0.0, 0.1),
    ("[0.1, 0.3)", 0.1, 0.3),
    ("[0.3, 0.5)", 0.3, 0.5),
    ("[0.5, 1]", 0.5, np.inf),
)


def score_buckets(means: Iterable[float]) -> dict[str, float]:
    """Fraction of heads in each of the paper's score buckets."""
    values = np.asarray(list(means), dtype=float)
    out = {"0": float(np.mean(values == 0))}
    for label, low, high in BUCKETS[1:]:
        inside = (values > low) & (values < high) if low == 0.0 else (values >= low) & (values < high)
        out[label] = float(np.mean(inside))
    return out


def cumulative_mass(means: Iterable[float]) -> np.ndarray:
    """Share of the total score held by the n best heads, for n = 1..N (all zeros if the total is 0)."""
    values = np.sort(np.asarray(list(means), dtype=float))[::-1]
    total = values.sum()
    return np.cumsum(values) / total if total > 0 else np.zeros_like(values)


def heads_for_mass(means: Iterable[float], share: float = 0.5) -> int:
    """How many of the best heads hold ``share`` of the total score (a sparsity number)."""
    curve = cumulative_mass(means)
    if curve.size == 0 or curve[-1] == 0:
        return 0
    return int(np.searchsorted(curve, share - 1e-12) + 1)


def jaccard(first: Iterable[str], second: Iterable[str]) -> float:
    """|A & B| / |A | B|; 0 for two empty sets (nothing shared)."""
    a, b = set(first), set(second)
    return len(a & b) / len(a | b) if a | b else 0.0


def top_k_overlap(first: Sequence[str], second: Sequence[str], k: int) -> float:
    """Fraction of the top-k of ``first`` that is also in the top-k of ``second`` (rankings, best first).

    k is capped at the shorter ranking, so a model with fewer than k heads is not penalised.
    """
    k = min(k, len(first), len(second))
    if k <= 0:
        raise ValueError("k must be positive and the rankings non-empty")
    return len(set(first[:k]) & set(second[:k])) / k


def rank(values: Sequence[float]) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (as Spearman needs)."""
    data = np.asarray(values, dtype=float)
    order = np.argsort(data, kind="mergesort")
    ranks = np.empty(len(data), dtype=float)
    sorted_values = data[order]
    start = 0
    while start < len(data):
        stop = start
        while stop + 1 < len(data) and sorted_values[stop + 1] == sorted_values[start]:
            stop += 1
        ranks[order[start : stop + 1]] = (start + stop) / 2 + 1
        start = stop + 1
    return ranks


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson r; NaN when either side is constant (no linear relation is defined)."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.shape != b.shape or a.size < 2:
        raise ValueError(f"need two equal-length sequences of >= 2 values, got {a.size} and {b.size}")
    a, b = a - a.mean(), b - b.mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denominator) if denominator > 0 else float("nan")


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    return pearson(rank(x), rank(y))


def ranking(means: dict[str, float]) -> list[str]:
    """Heads by mean, best first; ties keep the dict's (layer-major) order."""
    return [head for head, _ in sorted(means.items(), key=lambda item: -item[1])]


def cosine_matrix(maps: np.ndarray) -> np.ndarray:
    """Cosine similarity between rows of ``maps`` (n, features); an all-zero row has similarity 0."""
    norms = np.linalg.norm(maps, axis=1, keepdims=True)
    unit = np.divide(maps, norms, out=np.zeros_like(maps, dtype=float), where=norms > 0)
    return unit @ unit.T


# The buckets of the authors' analysis notebook, upper bounds inclusive: 0, (0, 0.1], (0.1, 0.3], (0.3, 0.5],
# (0.5, 1]; and the share it compares between a VLM's OCR heads and its base LLM's retrieval heads: mean > 0.1.
PAPER_BUCKETS = (("0", 0.0), ("≤0.1", 0.1), ("≤0.3", 0.3), ("≤0.5", 0.5), ("≤1", np.inf))
PAPER_SHARE_ABOVE = 0.1


def paper_buckets(means: Iterable[float]) -> dict[str, float]:
    """Fraction of heads in each of :data:`PAPER_BUCKETS` (a head of exactly 0.1 is in "≤0.1")."""
    values = np.asarray(list(means), dtype=float)
    out, low = {}, -np.inf
    for label, high in PAPER_BUCKETS:
        out[label] = float(np.mean((values > low) & (values <= high))) if values.size else 0.0
        low = high
    return out


def share_above(means: Iterable[float], threshold: float = PAPER_SHARE_ABOVE) -> float:
    """Fraction of heads whose mean score is above ``threshold``."""
    values = np.asarray(list(means), dtype=float)
    return float(np.mean(values > threshold)) if values.size else 0.0
