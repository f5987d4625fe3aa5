"""Masking and sink result tables: long CSVs -> pivot tables, one row group per model.

CSV columns: model, protocol, dataset, task, head_set, k, seed, metric, value, n, note. Values are
averaged over seeds only (rows equal in everything but the seed), never across models, protocols,
datasets, sample counts or options. Files written before the
``model`` column existed are read with the model "(unknown)".
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

logger = logging.getLogger(__name__)

COLUMNS = ["dataset", "task", "head_set", "k", "seed", "metric", "value", "n"]
KEYS = ["model", "protocol", "dataset", "task", "metric"]  # what a table row is about: never averaged over
# Columns added to result CSVs later (ocr_heads.experiments.base.ADDED_COLUMNS): ``prompt`` is a row key where a file
# has it; ``selection`` names the head list of a column (a top-k set of the authors' list is column top_authors).
ADDED_KEYS = ["prompt"]


def row_keys(frame: pd.DataFrame) -> list[str]:
    """What a table row of ``frame`` is about: :data:`KEYS` and the added key columns the file has."""
    return [*KEYS, *(column for column in ADDED_KEYS if column in frame.columns)]


def load_results(path: Path) -> pd.DataFrame | None:
    """The result rows, or None when the experiment has not been run (the file is absent)."""
    if not path.is_file():
        logger.info("%s not found; skipping its table", path)
        return None
    frame = pd.read_csv(path)
    missing = [column for column in COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {', '.join(missing)} (expected {', '.join(COLUMNS)})")
    if "model" not in frame.columns:
        logger.warning("%s has no model column (an older file): its rows are shown as model '(unknown)'", path)
    defaults = {"model": "(unknown)", "protocol": "", "note": ""}
    for column, default in defaults.items():
        present = column in frame.columns
        frame[column] = frame[column].astype("string").fillna(default).astype(str) if present else default
    return frame


def notes(frame: pd.DataFrame) -> dict[str, str]:
    """The caveat of each model that has one (random weights, toy model)."""
    return {model: note for model, note in frame.groupby("model")["note"].first().items() if note}


def variants(frame: pd.DataFrame) -> pd.Series:
    """Per row, what sets it apart from the other rows of its table cell besides the seed ('' for nothing).

    Only rows that differ in the seed alone are averaged; any other difference (n, beta, a rerun's value under
    the same seed, as CSVs written before rows were replaced hold) keeps each row apart, labelled by it.
    """
    cell = [*row_keys(frame), "head_set", "k"]
    others = [column for column in frame.columns if column not in (*cell, "seed", "value")]
    labels = pd.Series("", index=frame.index, dtype=object)
    for _, rows in frame.groupby(cell, dropna=False):
        if len(rows) < 2:
            continue
        varying = [column for column in others if rows[column].astype(str).nunique() > 1]
        if varying:
            labels[rows.index] = [", ".join(f"{column}={row[column]}" for column in varying)
                                  for _, row in rows.iterrows()]
        elif rows["seed"].duplicated(keep=False).any():
            labels[rows.index] = [f"row {index + 2} of the CSV" for index in rows.index]  # header is line 1
    return labels


def pivot(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows (model, protocol, dataset, task, metric) x columns (head_set, k): the value averaged over seeds.

    Rows that differ in anything but the seed are not averaged: each gets a table row of its own, told apart
    by a ``rows`` index level (e.g. ``n=3`` / ``n=4``), present only when some cell needs it.
    An empty ``k`` (e.g. the unmasked baseline) becomes 0, so the baseline keeps its own column.
    """
    frame = frame.copy()
    frame["k"] = frame["k"].fillna(0).astype(int)
    keys = row_keys(frame)
    if "prompt" in frame.columns:
        frame["prompt"] = frame["prompt"].astype("string").fillna("direct").astype(str)
    if "selection" in frame.columns:
        selection = frame.pop("selection").astype("string").fillna("").astype(str)
        other = ~selection.isin(["", "documented"])
        frame.loc[other, "head_set"] = frame.loc[other, "head_set"] + "_" + selection[other]
    frame["rows"] = variants(frame)
    index = keys if (frame["rows"] == "").all() else [*keys, "rows"]
    table = frame.pivot_table(
        index=index, columns=["head_set", "k"], values="value", aggfunc="mean"
    )
    return table.round(4)


def flat(table: pd.DataFrame) -> pd.DataFrame:
    """The pivot as a plain table (one header row: model, ..., none, top_k10, ...) for CSV readers."""
    out = table.copy()
    out.columns = ["none" if head_set == "none" else f"{head_set}_k{k}" for head_set, k in out.columns]
    return out.reset_index()


def seeds_and_samples(frame: pd.DataFrame) -> pd.DataFrame:
    """How many seeds and scored samples stand behind each cell (to judge the averages)."""
    frame = frame.copy()
    frame["k"] = frame["k"].fillna(0).astype(int)
    return frame.groupby(["model", "dataset", "task", "head_set", "k"]).agg(seeds=("seed", "nunique"), n=("n", "min"))
