"""Masking and sink result tables: long CSVs -> pivot tables.

CSV columns: dataset, task, head_set, k, seed, metric, value, n.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

logger = logging.getLogger(__name__)

COLUMNS = ["dataset", "task", "head_set", "k", "seed", "metric", "value", "n"]


def load_results(path: Path) -> pd.DataFrame | None:
    """The result rows, or None when the experiment has not been run (the file is absent)."""
    if not path.is_file():
        logger.info("%s not found; skipping its table", path)
        return None
    frame = pd.read_csv(path)
    missing = [column for column in COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {', '.join(missing)} (expected {', '.join(COLUMNS)})")
    return frame


def pivot(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows (dataset, task, metric) x columns (head_set, k): the value averaged over seeds.

    An empty ``k`` (e.g. the unmasked baseline) becomes 0, so the baseline keeps its own column.
    """
    frame = frame.copy()
    frame["k"] = frame["k"].fillna(0).astype(int)
    table = frame.pivot_table(
        index=["dataset", "task", "metric"], columns=["head_set", "k"], values="value", aggfunc="mean"
    )
    return table.round(4)


def seeds_and_samples(frame: pd.DataFrame) -> pd.DataFrame:
    """How many seeds and scored samples stand behind each cell (to judge the averages)."""
    frame = frame.copy()
    frame["k"] = frame["k"].fillna(0).astype(int)
    return frame.groupby(["dataset", "task", "head_set", "k"]).agg(seeds=("seed", "nunique"), n=("n", "min"))
