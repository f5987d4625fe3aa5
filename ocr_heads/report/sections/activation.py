"""Section "Static activation": activation frequency vs mean score, one scatter per score file."""

from __future__ import annotations

from ocr_heads.report import figures
from ocr_heads.report.sections.common import Report, Section, caveat, fmt
from ocr_heads.report.sections.files import FileSummary


def section(summaries: list[FileSummary], report: Report) -> Section | None:
    part = Section("Static activation: activation frequency vs mean score")
    for summary in (s for s in summaries if s.no_data is None):
        act = summary.activation
        path = report.add(figures.activation(summary.scores, act, report.out / f"activation_{summary.slug}.png"))
        part.figure(path, f"{summary.scores.label}: Pearson {fmt(act['pearson'])}, Spearman {fmt(act['spearman'])}"
                    f"{caveat(summary.note)}")
    return part if part.parts else None
