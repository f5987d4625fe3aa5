"""Section "Architectural distribution": how many selected heads each decoder layer holds, per score file.

The paper reads where OCR heads sit in the network (which layers hold them) off the score maps; this section counts
them per layer under both selection rules, so the distribution is a number per layer, not a colour to judge.
"""

from __future__ import annotations

import numpy as np

from ocr_heads.core.heads import parse_head
from ocr_heads.report.figures import _save, plt
from ocr_heads.report.sections.common import Report, Section, caveat
from ocr_heads.report.sections.files import FileSummary
from ocr_heads.scores.selection import RULES, SelectedHead


def per_layer_counts(selected: list[SelectedHead], num_layers: int) -> np.ndarray:
    """(num_layers,) number of selected heads in each layer."""
    counts = np.zeros(num_layers, dtype=int)
    for entry in selected:
        counts[parse_head(entry.head)[0]] += 1
    return counts


def layer_count_figure(summary: FileSummary, path) -> object:
    """Bars per layer, one colour per rule; layers without attention rows are marked, never drawn as 0 heads."""
    layers = summary.scores.num_layers
    fig, ax = plt.subplots(figsize=(min(14.0, 3.0 + 0.25 * layers), 3.2))
    width = 0.8 / len(RULES)
    for offset, rule in enumerate(RULES):
        counts = per_layer_counts(summary.chosen[rule], layers)
        ax.bar(np.arange(layers) + (offset - (len(RULES) - 1) / 2) * width, counts, width, label=f"{rule} rule")
    for layer in summary.scores.not_scoreable_layers:
        if layer < layers:
            ax.axvspan(layer - 0.5, layer + 0.5, color="0.85", hatch="//", zorder=0)
    ax.set_xlabel("layer")
    ax.set_ylabel("selected heads")
    ax.set_xlim(-0.5, layers - 0.5)
    ax.set_title(f"{summary.scores.label}: selected heads per layer", fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)


def section(summaries: list[FileSummary], report: Report) -> Section:
    part = Section("Architectural distribution: selected heads per layer")
    part.text("Per score file, the number of heads each decoder layer holds among the selected ones, by rule "
              "(grey hatched: layers without attention rows).")
    for summary in summaries:
        label = summary.scores.label
        if summary.no_data is not None:
            part.text(f"{label}: no figure, {summary.no_data}.{caveat(summary.note)}")
            continue
        path = report.add(layer_count_figure(summary, report.out / f"layers_{summary.slug}.png"))
        counts = per_layer_counts(summary.chosen["documented"], summary.scores.num_layers)
        busiest = ", ".join(f"l{layer}: {counts[layer]}" for layer in np.argsort(-counts, kind="stable")[:3]
                            if counts[layer])
        part.figure(path, f"{label}: documented-rule heads per layer (most: {busiest or 'none'}){caveat(summary.note)}")
        report.numbers["files"].setdefault(summary.slug, {})["heads_per_layer"] = counts.tolist()
    return part
