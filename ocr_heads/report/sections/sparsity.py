"""Section "Sparsity": heads above threshold, score distribution and cumulative score mass, all files in one."""

from __future__ import annotations

from ocr_heads.report import figures
from ocr_heads.report.sections.common import Report, Section, caveat
from ocr_heads.report.sections.files import FileSummary


def section(summaries: list[FileSummary], report: Report) -> Section:
    part = Section("Sparsity")
    drawable = [s for s in summaries if s.no_data is None]
    if not drawable:
        part.text("No sparsity figure: no score file has scores that differ between heads.")
        return part
    counts = {s.scores.label: {rule: len(heads) for rule, heads in s.chosen.items()} for s in summaries}
    path = report.add(figures.sparsity([s.scores for s in drawable], counts, report.out / "sparsity.png"))
    notes = "".join(caveat(report.caveats[s.scores.label]) for s in drawable if s.scores.label in report.caveats)
    part.figure(
        path,
        "Heads above threshold, score distribution (the paper's buckets) and cumulative score "
        f"mass (how many heads hold how much of the total score).{notes}",
    )
    return part
