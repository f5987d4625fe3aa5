"""Section "Score maps and selected heads": one layer x head heatmap and a top-10 table per score file."""

from __future__ import annotations

import html

from ocr_heads.report import figures
from ocr_heads.report.sections.common import Report, Section, caveat
from ocr_heads.report.sections.files import FileSummary
from ocr_heads.scores.selection import RULES, SelectedHead


def section(summaries: list[FileSummary], report: Report, thresholds: str) -> Section:
    part = Section("Score maps and selected heads")
    part.text(
        f"Selection: {thresholds}. Documented rule: non-zero fraction >= threshold; authors' rule "
        "(their released code): zero fraction > threshold. Dots mark heads selected by the documented rule."
    )
    for summary in summaries:
        label = summary.scores.label
        if summary.no_data is not None:
            part.text(f"{label}: no figures, {summary.no_data}.{caveat(summary.note)}")
            continue
        selected = [entry.head for entry in summary.chosen["documented"]]
        path = report.add(figures.heatmap(summary.scores, selected, report.out / f"heatmap_{summary.slug}.png"))
        part.figure(
            path,
            f"{label}: {summary.count('documented')} heads (documented), "
            f"{summary.count('authors')} heads (authors' rule) of {summary.total}{caveat(summary.note)}",
        )
        part.raw(_top_table(summary.chosen, label))
    return part


def _top_table(chosen: dict[str, list[SelectedHead]], label: str) -> str:
    rows = []
    for position in range(min(10, max(len(heads) for heads in chosen.values()))):
        cells = []
        for rule in RULES:
            heads = chosen[rule]
            cells.append(
                f"<td>{heads[position].head}</td><td>{heads[position].score:.3f}</td>"
                f"<td>{heads[position].frequency:.3f}</td>"
                if position < len(heads)
                else "<td></td>" * 3
            )
        rows.append(f"<tr><td>{position + 1}</td>{''.join(cells)}</tr>")
    header = "".join(f'<th colspan="3">{rule} rule</th>' for rule in RULES)
    sub = "<th>head</th><th>score</th><th>freq.</th>" * len(RULES)
    return (
        f"<table><caption>{html.escape(label)}: top-10 selected heads</caption>"
        f"<tr><th></th>{header}</tr><tr><th>#</th>{sub}</tr>{''.join(rows)}</table>"
    )
