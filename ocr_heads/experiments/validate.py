"""exp_validate: which score's top heads matter? For each score and each k, the edit (masking) on its top-k heads,
on k random heads (several seeds) and on k random heads outside its top k, against the unmodified model.

Every run is an ordinary experiment run (:func:`ocr_heads.experiments.run.run_one`: resumable per-sample log,
settings claim, provenance, batching), filed under ``OUT/runs/``:

    runs/common/   the baseline (once per dataset, shared by every score) and the random head sets (they depend
                   only on k and the seed, not on any score: shared too)
    runs/<score>/  that score's top-k and disjoint-random runs (a run's file name says its head set and k, not
                   whose heads, so each score has its own folder)

Calibration runs (``--calibration``) go under ``OUT/calibration/`` the same way. The numbers are then computed
from the runs' per-sample results (:mod:`ocr_heads.experiments.causal_gap`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ocr_heads.core.errors import UserError
from ocr_heads.core.kinds import Modality
from ocr_heads.experiments.base import NONE
from ocr_heads.experiments.causal_gap import (
    MIN_BOOTSTRAP_SAMPLES,
    Estimate,
    GapAtK,
    choose_k,
    gap_area,
    gap_at_k,
    k_grid,
    resample_indices,
    sample_gaps,
)
from ocr_heads.experiments.data import example_refs
from ocr_heads.experiments.run import RunConfig, run_one
from ocr_heads.experiments.scored_heads import ScoredHeads
from ocr_heads.scores.selection import choose_heads
from ocr_heads.tasks import get_task

if TYPE_CHECKING:
    from ocr_heads.models import ModelAdapter

logger = logging.getLogger(__name__)

# --edit NAME -> the registered experiment whose head sets top / random / random_disjoint apply it. The
# path-specific edits of the interventions issue plug in here as further names (an experiment, plus options).
EDITS: dict[str, tuple[str, dict[str, float]]] = {"mask": ("masking", {})}
DEFAULT_KS = (1, 2, 3, 5, 10, 20)
DEFAULT_SEEDS = 5
COMMON = "common"  # the runs every score shares (baseline, random heads)

RUN_COLUMNS = ["split", "dataset", "score", "k", "head_set", "seed", "metric", "value", "drop", "n", "heads",
               "score_file", "model", "protocol", "model_fingerprint", "edit", "note"]
SUMMARY_COLUMNS = ["score", "k", "top_drop", "random_drop", "gap", "gap_ci_low", "gap_ci_high", "n"]
SCORE_COLUMNS = ["dataset", "score", "chosen_k", "k_chosen_on", "top_heads", "gap", "gap_ci_low", "gap_ci_high",
                 "verdict", "gap_area", "gap_area_ci_low", "gap_area_ci_high", "ks", "n"]


def metric_of(dataset: str) -> str:
    """The metric whose drop is measured: EM where the task has it (passkey, nq, hotpot), else its first
    (doc, mdocs: ANLS)."""
    metrics = get_task(dataset).metrics
    return "em" if "em" in metrics else metrics[0]


@dataclass(frozen=True)
class Split:
    """Where one sweep runs: ``heldout`` (reported) or ``calibration`` (k is chosen on it)."""

    name: str
    dataset: str
    source: str | None
    n: int


def check_sample_count(split: Split) -> None:
    """Refuse, before any model loads, a split with fewer usable samples than the bootstrap needs."""
    if split.n < MIN_BOOTSTRAP_SAMPLES:
        raise UserError(f"--n {split.n}: the bootstrap needs at least {MIN_BOOTSTRAP_SAMPLES} samples")
    task = get_task(split.dataset)
    found = len(example_refs(task, task.rows(split.source), split.n))
    if found < MIN_BOOTSTRAP_SAMPLES:
        raise UserError(f"{split.dataset} ({split.source or 'default source'}) has {found} usable samples; the "
                        f"bootstrap needs at least {MIN_BOOTSTRAP_SAMPLES}")


@dataclass
class Sweep:
    """The settings every run of one exp_validate command shares."""

    adapter: ModelAdapter
    model_id: str
    fingerprint: str
    edit: str
    ks: list[int]
    seeds: list[int]
    max_new_tokens: int = 32
    data_seed: int = 0
    knobs: dict[str, object] = field(default_factory=dict)
    batch_size: int = 1
    disjoint_seeds: list[int] | None = None  # seeds of the disjoint control (None: the same as ``seeds``)

    @property
    def disjoint(self) -> list[int]:
        return self.seeds if self.disjoint_seeds is None else self.disjoint_seeds

    @property
    def experiment(self) -> str:
        return EDITS[self.edit][0]

    @property
    def options(self) -> dict[str, float]:
        return EDITS[self.edit][1]

    @property
    def layers(self) -> list[int]:
        return self.adapter.scoreable_layers

    def pool_size(self) -> int:
        shape = self.adapter.shape
        return sum(1 for layer in range(shape.num_layers) if layer in self.layers) * shape.num_heads

    def grid(self, scored: ScoredHeads) -> list[int]:
        """The ks this score is run at: the requested grid capped by its ranked heads and the model's."""
        cap = min(len(scored.ranking), self.pool_size())
        usable, dropped = k_grid(self.ks, cap)
        if dropped:
            logger.warning("%s: k grid capped at %d heads (%s ranks %d heads, the model has %d to edit): k=%s dropped",
                           scored.score, cap, scored.path.name, len(scored.ranking), self.pool_size(),
                           ",".join(map(str, dropped)))
        if not usable:
            raise UserError(f"{scored.path}: none of --ks {' '.join(map(str, self.ks))} fits its "
                            f"{len(scored.ranking)} ranked heads")
        return usable


@dataclass
class Run:
    """One finished run: its head set and each sample's metric value."""

    score: str  # "" for the shared baseline
    k: int
    head_set: str
    seed: int | None
    heads: list[str]
    values: dict[str, float]  # sample id -> metric value
    summary: dict


@dataclass
class Measured:
    """Every run of one split."""

    split: Split
    metric: str
    baseline: Run
    randoms: dict[tuple[str, int], list[Run]]  # (modality, k) -> one run per seed
    tops: dict[tuple[str, int], Run]  # (score, k)
    disjoint: dict[tuple[str, int], list[Run]]  # (score, k) -> one run per seed (may be empty)


def _run(sweep: Sweep, split: Split, modality: Modality, head_set: str, heads: list[str], seed: int, out: Path,
         score: str, heads_path: Path | None, metric: str) -> Run:
    cfg = RunConfig(sweep.experiment, sweep.model_id, split.dataset, modality, head_set, len(heads), seed, heads,
                    str(heads_path) if heads_path else None, dict(sweep.options) if heads else {}, split.source,
                    split.n, sweep.data_seed, sweep.max_new_tokens, None, sweep.adapter.protocol, sweep.knobs,
                    sweep.fingerprint)
    logger.info("%s %s: %s %s k=%d%s [%s]", split.name, split.dataset, score or "shared", head_set, len(heads),
                f" seed {seed}" if head_set.startswith("random") else "", ", ".join(heads) or "no heads")
    summary = run_one(sweep.adapter, cfg, out, batch_size=sweep.batch_size)
    if summary["n_failed"]:
        logger.warning("%s: %d sample(s) failed and are left out of every comparison (first: %s)", cfg.stem,
                       summary["n_failed"], summary["failed"][0]["id"])
    values = {p["id"]: float(p["scores"][metric]) for p in summary["predictions"]}
    return Run(score, len(heads), head_set, seed if head_set.startswith("random") else None, heads, values, summary)


def measure(sweep: Sweep, split: Split, scored: Sequence[ScoredHeads], grids: dict[str, list[int]], out: Path
            ) -> Measured:
    """Run the baseline, every score's top-k and disjoint-random head sets (at the ks of ``grids``, per score:
    :meth:`Sweep.grid`) and the shared random head sets."""
    metric = metric_of(split.dataset)
    shape = sweep.adapter.shape
    common = out / COMMON
    baseline = _run(sweep, split, scored[0].modality, NONE, [], 0, common, "", None, metric)
    randoms: dict[tuple[str, int], list[Run]] = {}
    tops: dict[tuple[str, int], Run] = {}
    disjoint: dict[tuple[str, int], list[Run]] = {}
    for item in scored:
        for k in grids[item.score]:
            key = (item.modality.value, k)
            if key not in randoms:
                randoms[key] = [
                    _run(sweep, split, item.modality, "random",
                         choose_heads("random", k, [], shape.num_layers, shape.num_heads, seed, sweep.layers),
                         seed, common, "", None, metric)
                    for seed in sweep.seeds]
            top = item.ranking[:k]
            tops[(item.score, k)] = _run(sweep, split, item.modality, "top", top, 0, out / item.score, item.score,
                                         item.path, metric)
            if not sweep.disjoint:
                disjoint[(item.score, k)] = []
                continue
            if sweep.pool_size() - k < k:
                logger.warning("%s k=%d: only %d heads lie outside the top %d; no disjoint random control",
                               item.score, k, sweep.pool_size() - k, k)
                disjoint[(item.score, k)] = []
                continue
            disjoint[(item.score, k)] = [
                _run(sweep, split, item.modality, "random_disjoint",
                     choose_heads("random_disjoint", k, top, shape.num_layers, shape.num_heads, seed, sweep.layers),
                     seed, out / item.score, item.score, item.path, metric)
                for seed in sweep.disjoint]
    return Measured(split, metric, baseline, randoms, tops, disjoint)


@dataclass(frozen=True)
class ScoreGaps:
    """One score on one split: the gap at each k, the area under the gap curve, the paired sample ids."""

    score: str
    gaps: list[GapAtK]
    area: Estimate
    ids: list[str]


def score_gaps(measured: Measured, item: ScoredHeads, ks: Sequence[int], resamples: int, seed: int) -> ScoreGaps:
    """Paired over the samples every run of this score (and the baseline and random runs) scored."""
    runs = [measured.baseline]
    for k in ks:
        runs += [measured.tops[(item.score, k)], *measured.randoms[(item.modality.value, k)]]
    ids = [sid for sid in measured.baseline.values if all(sid in run.values for run in runs)]
    if len(ids) < MIN_BOOTSTRAP_SAMPLES:
        raise UserError(f"{measured.split.dataset}: only {len(ids)} samples were scored in every run of "
                        f"{item.score}; the bootstrap needs at least {MIN_BOOTSTRAP_SAMPLES}")
    draws = resample_indices(len(ids), resamples, seed)

    def column(run: Run) -> list[float]:
        return [run.values[sid] for sid in ids]

    base = column(measured.baseline)
    gaps, per_sample = [], {}
    for k in ks:
        top = column(measured.tops[(item.score, k)])
        randoms = [column(run) for run in measured.randoms[(item.modality.value, k)]]
        gaps.append(gap_at_k(k, base, top, randoms, draws))
        per_sample[k] = sample_gaps(base, top, randoms)
    return ScoreGaps(item.score, gaps, gap_area(ks, per_sample, draws), ids)


def verdict(gap: Estimate) -> str:
    """What the interval says, in words (the demo's table and the scores CSV)."""
    if gap.low > 0:
        return "above random"
    if gap.high < 0:
        return "below random"
    return "no better than random"


def summary_rows(gaps: Sequence[ScoreGaps]) -> list[dict]:
    """``validate_summary.csv``: one row per score and k (drops and gaps in the metric's units)."""
    return [{"score": g.score, "k": row.k, "top_drop": f"{row.top_drop:.6f}", "random_drop": f"{row.random_drop:.6f}",
             "gap": f"{row.gap.value:.6f}", "gap_ci_low": f"{row.gap.low:.6f}", "gap_ci_high": f"{row.gap.high:.6f}",
             "n": row.n} for g in gaps for row in g.gaps]


def score_rows(dataset: str, gaps: Sequence[ScoreGaps], chosen: dict[str, int], chosen_on: str,
               scored: Sequence[ScoredHeads]) -> list[dict]:
    """``validate_scores.csv``: per score, the chosen k, its top heads, the gap there with its verdict, and the
    area under the gap curve over the grid."""
    rankings = {item.score: item.ranking for item in scored}
    rows = []
    for g in gaps:
        at = next(row for row in g.gaps if row.k == chosen[g.score])
        rows.append({"dataset": dataset, "score": g.score, "chosen_k": at.k, "k_chosen_on": chosen_on,
                     "top_heads": " ".join(rankings[g.score][:at.k]), "gap": f"{at.gap.value:.6f}",
                     "gap_ci_low": f"{at.gap.low:.6f}", "gap_ci_high": f"{at.gap.high:.6f}",
                     "verdict": verdict(at.gap), "gap_area": f"{g.area.value:.6f}",
                     "gap_area_ci_low": f"{g.area.low:.6f}", "gap_area_ci_high": f"{g.area.high:.6f}",
                     "ks": " ".join(str(row.k) for row in g.gaps), "n": at.n})
    return rows


def chosen_ks(gaps: Sequence[ScoreGaps]) -> dict[str, int]:
    """Per score, the k of the largest gap on these (calibration) samples."""
    return {g.score: choose_k(g.gaps).k for g in gaps}


def run_rows(measured: Measured, scored: Sequence[ScoredHeads], sweep: Sweep) -> list[dict]:
    """``validate.csv``: one row per score x k x head set (the baseline once per score, k 0), with provenance."""
    base = measured.baseline
    base_mean = _mean(base.values.values())
    rows = []

    def row(item: ScoredHeads, run: Run) -> dict:
        value = _mean(run.values.values())
        summary = run.summary
        return {"split": measured.split.name, "dataset": measured.split.dataset, "score": item.score, "k": run.k,
                "head_set": run.head_set, "seed": "" if run.seed is None else run.seed, "metric": measured.metric,
                "value": f"{value:.6f}", "drop": f"{base_mean - value:.6f}", "n": summary["n"],
                "heads": " ".join(run.heads), "score_file": str(item.path), "model": summary["model"],
                "protocol": sweep.adapter.protocol, "model_fingerprint": sweep.fingerprint, "edit": sweep.edit,
                "note": summary.get("warning", "")}

    for item in scored:
        rows.append(row(item, base))
        for (score, k), top in measured.tops.items():
            if score != item.score:
                continue
            rows.append(row(item, top))
            rows += [row(item, run) for run in measured.randoms[(item.modality.value, k)]]
            rows += [row(item, run) for run in measured.disjoint[(score, k)]]
    return rows


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")
