"""Matplotlib figures of the report (Agg backend, one PNG each). Each function returns the written path."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: CI, notebooks under nbclient, GPU boxes without a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from ocr_heads.core.heads import parse_head  # noqa: E402
from ocr_heads.report import stats  # noqa: E402
from ocr_heads.scores.files import ScoreFile  # noqa: E402

DPI = 130
KIND_COLOURS = {"ocr": "tab:orange", "retrieval": "tab:blue", "prefill": "tab:green", None: "tab:gray"}


def _colour_max(values: np.ndarray) -> float:
    """Top of the colour scale: the largest score, or 1 when every score is 0 (a flat map reads as 0, not 1e-9)."""
    top = float(np.max(values)) if np.size(values) else 0.0
    return top if top > 0 else 1.0


def tick_step(n: int, max_labels: int = 16) -> int:
    """Label every 1st/2nd/4th/8th... index so that at most ``max_labels`` labels share an axis."""
    step = 1
    while math.ceil(n / step) > max_labels:
        step *= 2
    return step


def _grid_ticks(ax: plt.Axes, num_layers: int, num_heads: int, max_labels: int = 16) -> None:
    hstep, lstep = tick_step(num_heads, max_labels), tick_step(num_layers, max_labels)
    ax.set_xticks(range(0, num_heads, hstep))
    ax.set_yticks(range(0, num_layers, lstep))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def heatmap(scores: ScoreFile, selected: list[str], path: Path) -> Path:
    """Layer x head map of mean scores; dots mark the selected heads; layers without attention rows (not
    scoreable, e.g. linear attention) are drawn grey and hatched, never as scores of 0."""
    not_scoreable = [layer for layer in scores.not_scoreable_layers if layer < scores.num_layers]
    grid = np.ma.masked_array(scores.matrix(), mask=np.zeros((scores.num_layers, scores.num_heads), dtype=bool))
    grid.mask[not_scoreable] = True
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.85")
    width = min(14.0, 2.5 + 0.32 * scores.num_heads)
    height = min(14.0, 1.5 + 0.26 * scores.num_layers)
    fig, ax = plt.subplots(figsize=(width, height))
    image = ax.imshow(
        grid,
        cmap=cmap,
        vmin=0.0,
        vmax=_colour_max(grid.compressed()),
        aspect="auto",
        origin="upper",
        interpolation="nearest",
    )
    fig.colorbar(image, ax=ax, label="mean score", fraction=0.04, pad=0.02)
    for i, layer in enumerate(not_scoreable):
        ax.add_patch(Rectangle(
            (-0.5, layer - 0.5), scores.num_heads, 1, fill=False, hatch="///", edgecolor="0.45", linewidth=0,
            label=f"not scoreable: no attention ({len(not_scoreable)} layers)" if i == 0 else None))
    if selected or not_scoreable:
        cells = np.array([parse_head(name) for name in selected]).reshape(-1, 2)
        ax.scatter(
            cells[:, 1],
            cells[:, 0],
            s=9,
            c="white",
            edgecolors="black",
            linewidths=0.4,
            label=f"selected ({len(selected)})",
        )
        ax.legend(loc="upper right", bbox_to_anchor=(1.0, -0.08), fontsize=8, frameon=False)
    _grid_ticks(ax, scores.num_layers, scores.num_heads)
    ax.set_title(
        f"{scores.label}: mean score per head ({scores.num_layers} layers x {scores.num_heads} heads)"
    )
    return _save(fig, path)


def base_llm_sparsity(pairs: list[tuple[ScoreFile, ScoreFile]], path: Path,
                      paper: list[tuple[float | None, float | None]] | None = None) -> Path:
    """The paper's comparison, two panels: % of heads per bucket of mean score (each VLM's OCR scores beside its
    base LLM's retrieval scores: same shade, OCR solid, retrieval hatched), and the share of heads above 0.1 per
    file with the paper's value as a black tick where it reports one."""
    names = [name for name, _ in stats.PAPER_BUCKETS]
    files = [scores for pair in pairs for scores in pair]
    colours = [matplotlib.colormaps["tab10"](index % 10) for index in range(len(pairs)) for _ in (0, 1)]
    hatches = ["", "//"] * len(pairs)
    labels = [f"{scores.model or scores.label} ({'OCR' if scores.kind == 'ocr' else scores.kind})" for scores in files]
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    width = 0.8 / len(files)
    for index, scores in enumerate(files):
        shares = stats.paper_buckets(scores.means.values())
        left.bar(np.arange(len(names)) + (index - (len(files) - 1) / 2) * width, [100 * shares[n] for n in names],
                 width=width, color=colours[index], hatch=hatches[index], edgecolor="white", label=labels[index])
    left.set_xticks(range(len(names)), names)
    left.set_xlabel("mean score")
    left.set_ylabel("% of heads")
    left.set_title("score distribution: VLM OCR (solid) vs base-LLM retrieval (hatched)")
    left.legend(fontsize=8)
    above = [100 * stats.share_above(scores.means.values()) for scores in files]
    bars = right.bar(range(len(files)), above, color=colours, hatch=hatches, edgecolor="white")
    for index, bar in enumerate(bars):
        right.annotate(f"{above[index]:.1f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                       va="bottom", fontsize=8)
        reported = paper[index // 2][index % 2] if paper else None
        if reported is not None:
            right.hlines(reported, bar.get_x(), bar.get_x() + bar.get_width(), colors="black", linewidth=2,
                         label="paper" if not right.get_legend_handles_labels()[1] else None)
    right.set_xticks(range(len(files)), labels, rotation=20, ha="right", fontsize=8)
    right.set_ylabel("% of heads with mean score > 0.1")
    right.set_title("share of heads above 0.1")
    if right.get_legend_handles_labels()[1]:
        right.legend(fontsize=8)
    return _save(fig, path)


def sparsity(files: list[ScoreFile], counts: dict[str, dict[str, int]], path: Path) -> Path:
    """Three panels: heads above threshold by rule, the paper's score buckets, cumulative score mass."""
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    labels = [scores.label for scores in files]
    positions = np.arange(len(files))

    ax = axes[0]
    # Neutral colours here: orange/blue mean OCR/retrieval in the other panels.
    for offset, rule, colour in ((-0.2, "documented", "0.35"), (0.2, "authors", "0.7")):
        fractions = [
            counts[label][rule] / (s.num_layers * s.num_heads) for label, s in zip(labels, files, strict=True)
        ]
        bars = ax.bar(positions + offset, fractions, width=0.4, label=f"{rule} rule", color=colour)
        for bar, label in zip(bars, labels, strict=True):
            ax.annotate(
                str(counts[label][rule]),
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )
    ax.set_xticks(positions, labels, rotation=15, ha="right", fontsize=8)
    ax.set_ylabel("fraction of all heads")
    ax.set_title("heads above threshold (count on bars)")
    ax.legend(fontsize=8)

    ax = axes[1]
    bucket_names = [name for name, _, _ in stats.BUCKETS]
    width = 0.8 / max(1, len(files))
    for index, scores in enumerate(files):
        shares = stats.score_buckets(scores.means.values())
        ax.bar(
            np.arange(len(bucket_names)) + (index - (len(files) - 1) / 2) * width,
            [100 * shares[name] for name in bucket_names],
            width=width,
            label=scores.label,
            color=KIND_COLOURS.get(scores.kind) if len(files) <= 2 else None,
        )
    ax.set_xticks(range(len(bucket_names)), bucket_names, fontsize=8)
    ax.set_xlabel("mean score")
    ax.set_ylabel("% of heads")
    ax.set_title("score distribution")
    ax.legend(fontsize=8)

    ax = axes[2]
    for scores in files:
        curve = stats.cumulative_mass(scores.means.values())
        ax.plot(
            np.arange(1, len(curve) + 1),
            curve,
            label=scores.label,
            color=KIND_COLOURS.get(scores.kind) if len(files) <= 2 else None,
            linestyle="-" if scores.kind == "ocr" else "--",
        )
    ax.set_xscale("log")
    ax.set_xlabel("number of best heads (log)")
    ax.set_ylabel("share of total score")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title("cumulative score mass (OCR solid, retrieval dashed)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def distinctness(first: ScoreFile, second: ScoreFile, numbers: dict[str, float], path: Path) -> Path:
    """Per-head scatter of two score maps of the same shape, with the overlap numbers in the title."""
    fig, ax = plt.subplots(figsize=(5.8, 5.4))
    x = np.array([first.means[head] for head in first.heads])
    y = np.array([second.means[head] for head in first.heads])
    ax.scatter(x, y, s=10, alpha=0.6, edgecolors="none")
    limit = max(1e-9, float(max(x.max(), y.max()))) * 1.05
    ax.plot([0, limit], [0, limit], color="gray", linewidth=0.8, linestyle=":")
    ax.set_xlim(0, limit)
    ax.set_ylim(0, limit)
    ax.set_xlabel(f"{first.label} mean score")
    ax.set_ylabel(f"{second.label} mean score")
    ax.set_title(
        f"Pearson {numbers['pearson']:.2f}, Spearman {numbers['spearman']:.2f}\n"
        f"Jaccard {numbers['jaccard']:.2f}, top-10 overlap {numbers['top10']:.2f}, "
        f"top-20 {numbers['top20']:.2f}",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    return _save(fig, path)


def activation(scores: ScoreFile, numbers: dict[str, float], path: Path) -> Path:
    """Static activation: each head's activation frequency against its mean score."""
    frequencies = scores.frequencies()
    x = np.array([frequencies[head] for head in scores.heads])
    y = np.array([scores.means[head] for head in scores.heads])
    fig, ax = plt.subplots(figsize=(5.8, 5.2))
    ax.scatter(x, y, s=10, alpha=0.6, color=KIND_COLOURS.get(scores.kind), edgecolors="none")
    ax.set_xlabel("activation frequency (fraction of non-zero events)")
    ax.set_ylabel("mean score")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, max(1e-9, float(y.max())) * 1.05 + 0.02)
    ax.grid(alpha=0.3)
    ax.set_title(
        f"{scores.label}\nPearson {numbers['pearson']:.3f}, Spearman {numbers['spearman']:.3f}", fontsize=10
    )
    return _save(fig, path)


def case_heatmaps(chars: list[str], maps: np.ndarray, model: str, path: Path) -> Path:
    """One small layer x head map per character, on one shared colour scale."""
    columns = min(6, len(chars))
    rows = math.ceil(len(chars) / columns)
    num_layers, num_heads = maps.shape[1:]
    panel_height = 2.3 * min(2.0, max(0.5, num_layers / max(num_heads, 1)))  # tall models stay on a page
    fig, axes = plt.subplots(
        rows,
        columns,
        figsize=(2.3 * columns + 1.0, panel_height * rows + 0.6),
        squeeze=False,
        sharex=True,
        sharey=True,
        layout="constrained",
    )
    vmax = _colour_max(maps)
    for index, ax in enumerate(axes.flat):
        if index >= len(chars):
            ax.axis("off")
            continue
        image = ax.imshow(
            maps[index], cmap="viridis", vmin=0, vmax=vmax, aspect="auto", interpolation="nearest"
        )
        ax.set_title(f"'{chars[index]}'", fontsize=9)
        ax.set_xticks(range(0, num_heads, tick_step(num_heads, 4)))
        ax.set_yticks(range(0, num_layers, tick_step(num_layers, 4)))
        ax.tick_params(labelsize=7)
    for ax in axes[-1]:
        ax.set_xlabel("head", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("layer", fontsize=8)
    fig.colorbar(image, ax=axes, label="score", fraction=0.02, pad=0.01)
    fig.suptitle(f"{model}: per-character head scores")
    return _save(fig, path)


def case_similarity(chars: list[str], similarity: np.ndarray, model: str, path: Path) -> Path:
    """Character x character cosine similarity of the head maps."""
    size = min(12.0, 3.0 + 0.25 * len(chars))
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    image = ax.imshow(similarity, cmap="magma", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(image, ax=ax, label="cosine similarity of head maps", fraction=0.04, pad=0.02)
    ax.set_xticks(range(len(chars)), chars, fontsize=8)
    ax.set_yticks(range(len(chars)), chars, fontsize=8)
    ax.set_xlabel("character")
    ax.set_ylabel("character")
    ax.set_title(f"{model}: do the same heads read every character?")
    return _save(fig, path)
