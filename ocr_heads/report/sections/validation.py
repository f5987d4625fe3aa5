"""Section "Which score's heads matter" (exp_validate): the causal gap of each score's top-k heads over k, the
figure of drops with the random band, and how alike the scores' head sets and rankings are.

Also the two figures and the similarity table exp_validate writes itself (the section redraws nothing: it links
what the run wrote), so the command and the report show the same pictures.
"""

from __future__ import annotations

import html
import itertools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ocr_heads.report import stats  # noqa: E402
from ocr_heads.report.sections.common import Report, Section, shown  # noqa: E402

SIMILARITY_COLUMNS = ["score_a", "score_b", "measure", "k", "value"]
PREFIX = "validate"


def output_name(kind: str, dataset: str | None, ending: str) -> str:
    """``validate_summary.csv`` for a run on one dataset; ``validate_summary_doc.csv`` per dataset when a run
    covers several (``kind`` "" gives the per-run ``validate.csv``)."""
    stem = f"{PREFIX}_{kind}" if kind else PREFIX
    return f"{stem}_{dataset}{ending}" if dataset else f"{stem}{ending}"


def similarity_rows(rankings: Mapping[str, Sequence[str]], values: Mapping[str, Mapping[str, float]],
                    ks: Sequence[int]) -> list[dict]:
    """Every ordered pair of scores (the diagonal included): Jaccard of their top-k sets at each k both rankings
    reach, and Spearman of their values over the heads both cover."""
    rows = []
    for a, b in itertools.product(rankings, repeat=2):
        for k in ks:
            if k <= min(len(rankings[a]), len(rankings[b])):
                rows.append({"score_a": a, "score_b": b, "measure": "jaccard", "k": k,
                             "value": stats.jaccard(rankings[a][:k], rankings[b][:k])})
        heads = [head for head in values[a] if head in values[b]]
        rho = math.nan if len(heads) < 2 else stats.spearman([values[a][h] for h in heads],
                                                             [values[b][h] for h in heads])
        rows.append({"score_a": a, "score_b": b, "measure": "spearman", "k": "", "value": rho})
    return rows


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return path


def drop_figure(runs: pd.DataFrame, chosen: Mapping[str, int], path: Path, title: str) -> Path:
    """One panel per score: the drop (points) of its top-k heads over k, the random heads' mean with the band
    from the lowest to the highest seed shaded, the disjoint-random mean dashed, the chosen k marked."""
    scores = list(dict.fromkeys(runs["score"]))
    columns = min(3, len(scores))
    rows = math.ceil(len(scores) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.3 * rows), squeeze=False, sharey=True)
    for ax, score in zip(axes.flat, scores, strict=False):
        own = runs[(runs["score"] == score) & (runs["head_set"] != "none")].copy()
        own["points"] = 100 * own["drop"].astype(float)
        top = own[own["head_set"] == "top"].sort_values("k")
        ax.plot(top["k"], top["points"], "o-", color="tab:red", label="top-k heads")
        for head_set, style in (("random", "tab:gray"), ("random_disjoint", "tab:blue")):
            group = own[own["head_set"] == head_set].groupby("k")["points"]
            if not len(group):
                continue
            mean = group.mean()
            if head_set == "random":
                ax.fill_between(mean.index, group.min(), group.max(), color=style, alpha=0.25,
                                label="random heads (seed range)")
                ax.plot(mean.index, mean.values, "s-", color=style, label="random heads (mean)")
            else:
                ax.plot(mean.index, mean.values, "^--", color=style, label="random, outside top-k (mean)")
        if score in chosen:
            ax.axvline(chosen[score], color="black", lw=0.8, ls=":", label=f"chosen k = {chosen[score]}")
        ax.axhline(0, color="black", lw=0.5)
        low, high = ax.get_ylim()
        ax.set_ylim(min(low, -5), max(high, 5))  # at least +-5 points: a flat run must not zoom into rounding
        ax.set_xscale("log")
        ticks = sorted(set(top["k"]))
        ax.set_xticks(ticks, [str(k) for k in ticks])
        ax.minorticks_off()
        ax.set_title(score)
        ax.set_xlabel("k (heads edited)")
        ax.set_ylabel(f"drop in {runs['metric'].iloc[0]} (points)")
    for ax in list(axes.flat)[len(scores):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def similarity_figure(rows: Sequence[dict], path: Path, title: str) -> Path:
    """Heatmaps: Jaccard of the scores' top-k sets at each k, and Spearman of their rankings."""
    frame = pd.DataFrame(rows)
    scores = list(dict.fromkeys(frame["score_a"]))
    ks = sorted({int(k) for k in frame.loc[frame["measure"] == "jaccard", "k"]})
    panels = [("jaccard", k) for k in ks] + [("spearman", "")]
    fig, axes = plt.subplots(1, len(panels), figsize=(0.6 * len(scores) * len(panels) + 2, 0.6 * len(scores) + 1.6),
                             squeeze=False)
    for ax, (measure, k) in zip(axes.flat, panels, strict=True):
        part = frame[(frame["measure"] == measure) & (frame["k"].astype(str) == str(k))]
        grid = part.pivot(index="score_a", columns="score_b", values="value").reindex(index=scores, columns=scores)
        matrix = grid.to_numpy(dtype=float)
        low = -1.0 if measure == "spearman" else 0.0
        ax.imshow(matrix, vmin=low, vmax=1.0, cmap="viridis")
        for (i, j), value in np.ndenumerate(matrix):
            if np.isfinite(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if value < (low + 1) / 2 else "black")
        ax.set_xticks(range(len(scores)), scores, rotation=90, fontsize=7)
        ax.set_yticks(range(len(scores)), scores if ax is axes.flat[0] else [""] * len(scores), fontsize=7)
        ax.set_title(f"Jaccard, top-{k}" if measure == "jaccard" else "Spearman (rankings)", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def section(folder: Path, report: Report) -> Section:
    """The section of an exp_validate output folder: per dataset its scores table (chosen k, gap, verdict), the
    full summary (every k) and the figures the run wrote."""
    summaries = sorted(folder.glob(f"{PREFIX}_summary*.csv"))
    if not summaries:
        raise ValueError(f"--validate {folder}: no {PREFIX}_summary.csv (make it with exp_validate.py)")
    part = Section(f"Which score's heads matter: causal gap ({shown(folder, report.out)})")
    part.text("Drop = baseline minus edited metric, over the same samples; gap = the top-k heads' drop minus the mean "
              "drop of k random heads (over seeds); 95% interval: paired bootstrap over samples. A gap whose interval "
              "holds 0 means the score's heads did no better than random heads.")
    runs = folder / output_name("", None, ".csv")
    if runs.is_file():
        frame = pd.read_csv(runs, keep_default_na=False)
        for note in sorted({n for n in frame.get("note", []) if n}):
            report.caveats[f"{frame['model'].iloc[0]} (validate)"] = note
    for summary in summaries:
        dataset = summary.stem.removeprefix(f"{PREFIX}_summary").removeprefix("_") or None
        label = dataset or "the evaluated dataset"
        chosen = folder / output_name("scores", dataset, ".csv")
        if chosen.is_file():
            table = pd.read_csv(chosen, keep_default_na=False)
            part.raw(f"<p><b>{html.escape(label)}</b>: each score at its chosen k</p>" + table.to_html(index=False))
            report.lines.append(f"validate ({label}):\n{table.to_string(index=False)}")
        part.raw(pd.read_csv(summary).to_html(index=False))
        _figure(part, folder / output_name("drop", dataset, ".png"), report,
                f"{label}: drop vs k per score; shaded: random heads, lowest to highest seed")
    _figure(part, folder / output_name("similarity", None, ".png"), report,
            "how alike the scores are: top-k sets (Jaccard) and rankings (Spearman)")
    return part


def _figure(part: Section, figure: Path, report: Report, caption: str) -> None:
    if figure.is_file():
        part.raw(f"<figure><img src='{html.escape(shown(figure, report.out))}' alt='{html.escape(caption)}'>"
                 f"<figcaption>{html.escape(caption)}</figcaption></figure>")
