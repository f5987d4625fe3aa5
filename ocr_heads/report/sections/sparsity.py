"""Section "Sparsity": heads above threshold, score distribution and cumulative score mass, all files in one."""

from __future__ import annotations

import html

from ocr_heads.report import figures, stats
from ocr_heads.report.base_llm import paper_share
from ocr_heads.report.sections.common import Report, Section, caveat
from ocr_heads.report.sections.files import FileSummary
from ocr_heads.scores.files import ScoreFile


def section(summaries: list[FileSummary], report: Report,
            base_llm: list[tuple[ScoreFile, ScoreFile]] | None = None) -> Section:
    """``base_llm``: (a VLM's OCR scores, its base LLM's retrieval scores) pairs, drawn as the paper compares them."""
    part = Section("Sparsity")
    if base_llm:
        _base_llm_comparison(base_llm, report, part)
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


def _base_llm_comparison(pairs: list[tuple[ScoreFile, ScoreFile]], report: Report, part: Section) -> None:
    """The paper's figure: each VLM's OCR heads beside its base LLM's retrieval heads, buckets and share > 0.1."""
    paper = [(paper_share(vlm.model), paper_share(llm.model)) for vlm, llm in pairs]
    path = report.add(figures.base_llm_sparsity(pairs, report.out / "sparsity_base_llm.png", paper))
    rows, numbers = [], []
    for (vlm, llm), reported in zip(pairs, paper, strict=True):
        entry = {}
        for role, scores, value in (("vlm", vlm, reported[0]), ("base_llm", llm, reported[1])):
            entry[role] = {"label": scores.label, "buckets": stats.paper_buckets(scores.means.values()),
                           "share_above_0.1": stats.share_above(scores.means.values()), "paper_share": value}
            cells = "".join(f"<td>{100 * share:.1f}</td>" for share in entry[role]["buckets"].values())
            paper_cell = "" if value is None else f"{value:.1f}"
            rows.append(f"<tr><td>{html.escape(scores.label)}</td>{cells}"
                        f"<td>{100 * entry[role]['share_above_0.1']:.1f}</td><td>{paper_cell}</td></tr>")
        numbers.append(entry)
        report.lines.append(f"sparsity: {vlm.label} {100 * entry['vlm']['share_above_0.1']:.1f}% of heads > 0.1, "
                            f"base LLM {llm.label} {100 * entry['base_llm']['share_above_0.1']:.1f}%")
    report.numbers["base_llm_sparsity"] = numbers
    notes = "".join(caveat(report.caveats[s.label]) for pair in pairs for s in pair if s.label in report.caveats)
    part.figure(path, "OCR heads of each VLM beside the retrieval heads of its base LLM, as the paper compares "
                      "them: % of heads per bucket of mean score (0, ≤0.1, ≤0.3, ≤0.5, ≤1; OCR solid, retrieval "
                      "hatched) and the share above 0.1 (the paper's value as a black tick where it reports one)."
                      f"{notes}")
    header = "".join(f"<th>{html.escape(name)} (%)</th>" for name, _ in stats.PAPER_BUCKETS)
    part.raw(f"<table><caption>Score buckets, VLM OCR vs base-LLM retrieval</caption><tr><th>scores</th>{header}"
             f"<th>&gt; 0.1 (%)</th><th>paper &gt; 0.1 (%)</th></tr>{''.join(rows)}</table>")
