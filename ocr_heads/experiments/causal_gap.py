"""The causal gap of a head set: how much more masking its top-k heads costs than masking k random heads.

Pure arithmetic over a per-sample table (no model), so every number is checkable by hand.

For one score and one k, on the same n samples:

- ``top_drop``    = mean over samples of (baseline - top-k edited), the metric's drop (EM: points / 100);
- ``random_drop`` = mean over seeds of the mean over samples of (baseline - random edited);
- ``gap``         = top_drop - random_drop, i.e. the mean over samples of the per-sample gap
  ``g_i = (b_i - t_i) - mean_s (b_i - r_si)``.

The 95% interval is a paired percentile bootstrap over samples: one draw of n sample indices (with
replacement) is applied to the baseline, the top-k run and every random seed alike, and the gap is
recomputed; the same draws serve every k, so the area under the gap curve (trapezoid over k) gets its
interval from the same resamples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# Fewer paired samples than this and a percentile bootstrap has too few distinct resamples to mean anything
# (with 9 binary outcomes a 95% interval is set by a handful of extreme draws): such a run is refused.
MIN_BOOTSTRAP_SAMPLES = 10
DEFAULT_RESAMPLES = 2000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Estimate:
    """A mean with its bootstrap interval."""

    value: float
    low: float
    high: float


@dataclass(frozen=True)
class GapAtK:
    """One score at one k: the drops, the gap and the gap's interval over ``n`` paired samples."""

    k: int
    top_drop: float
    random_drop: float
    gap: Estimate
    n: int


def sample_gaps(baseline: Sequence[float], top: Sequence[float], randoms: Sequence[Sequence[float]]) -> np.ndarray:
    """Per-sample gap ``(b - t) - mean_s (b - r_s)``: (n,) from baseline (n,), top (n,), randoms (seeds, n)."""
    base, edited, controls = _paired(baseline, top, randoms)
    return (base - edited) - (base[None, :] - controls).mean(axis=0)


def _paired(baseline: Sequence[float], top: Sequence[float], randoms: Sequence[Sequence[float]]
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    base, edited, controls = (np.asarray(x, dtype=float) for x in (baseline, top, randoms))
    if controls.ndim != 2 or not len(controls):
        raise ValueError("randoms must be one row of per-sample values per seed (at least one seed)")
    if not (base.shape == edited.shape == controls.shape[1:]) or base.ndim != 1:
        raise ValueError(f"baseline {base.shape}, top {edited.shape} and randoms {controls.shape} must cover the "
                         "same samples")
    return base, edited, controls


def resample_indices(n: int, resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> np.ndarray:
    """(resamples, n) sample indices drawn with replacement; one matrix shared by every k of a score."""
    if n < MIN_BOOTSTRAP_SAMPLES:
        raise ValueError(f"the bootstrap needs at least {MIN_BOOTSTRAP_SAMPLES} paired samples, got {n}")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def interval(values: np.ndarray, draws: np.ndarray, confidence: float = CONFIDENCE) -> Estimate:
    """The mean of per-sample ``values`` and the percentile interval of its means over ``draws``."""
    means = values[draws].mean(axis=1)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return Estimate(float(values.mean()), float(low), float(high))


def gap_at_k(k: int, baseline: Sequence[float], top: Sequence[float], randoms: Sequence[Sequence[float]],
             draws: np.ndarray) -> GapAtK:
    base, edited, controls = _paired(baseline, top, randoms)
    return GapAtK(k, float((base - edited).mean()), float((base[None, :] - controls).mean()),
                  interval(sample_gaps(base, edited, controls), draws), len(base))


def gap_area(ks: Sequence[int], per_sample: Mapping[int, np.ndarray], draws: np.ndarray) -> Estimate:
    """Area under the gap curve over k (trapezoid on the k axis; units: metric x heads) with its interval.

    The area is linear in the per-sample gaps, so each sample's own area is resampled. One k: the area is 0
    (no width); its interval too."""
    order = sorted(ks)
    if len(order) < 2:
        return Estimate(0.0, 0.0, 0.0)
    stacked = np.stack([per_sample[k] for k in order])  # (ks, n)
    widths = np.diff(np.asarray(order, dtype=float))
    areas = ((stacked[1:] + stacked[:-1]) / 2 * widths[:, None]).sum(axis=0)
    return interval(areas, draws)


def choose_k(gaps: Sequence[GapAtK]) -> GapAtK:
    """The k with the largest gap (ties: the smaller k, fewer heads to explain), as chosen on a calibration
    split; its gap is then measured on held-out samples."""
    if not gaps:
        raise ValueError("no k to choose from")
    return max(sorted(gaps, key=lambda g: g.k), key=lambda g: g.gap.value)


def k_grid(requested: Sequence[int], available: int) -> tuple[list[int], list[int]]:
    """The grid's k values that a head set can fill (k <= ``available`` heads), sorted, and those dropped."""
    grid = sorted(set(requested))
    return [k for k in grid if k <= available], [k for k in grid if k > available]
