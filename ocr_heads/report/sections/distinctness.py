"""Section "Distinctness": overlap and rank correlation for every pair of score files over the same head grid."""

from __future__ import annotations

import itertools
import logging

from ocr_heads.report import figures, stats
from ocr_heads.report.sections.common import Report, Section, caveat, fmt
from ocr_heads.report.sections.files import FileSummary
from ocr_heads.scores.selection import RULES, select_heads

logger = logging.getLogger(__name__)


def section(summaries: list[FileSummary], report: Report, min_score: float, min_frequency: float) -> Section | None:
    """One figure per comparable pair of drawable files (OCR on the x axis); None if there is no pair."""
    part = Section("Distinctness: do OCR and retrieval heads differ?")
    drawable = [(s.scores, s.slug) for s in summaries if s.no_data is None]
    for (a, slug_a), (b, slug_b) in itertools.combinations(drawable, 2):
        if (a.num_layers, a.num_heads) != (b.num_layers, b.num_heads):
            logger.info("not comparing %s with %s: different head grids", a.label, b.label)
            continue
        if b.kind == "ocr" and a.kind != "ocr":
            (a, slug_a), (b, slug_b) = (b, slug_b), (a, slug_a)
        heads = a.heads
        rank_a, rank_b = stats.ranking(a.means), stats.ranking(b.means)
        sets = {
            rule: (
                [h.head for h in select_heads(a, rule, min_score, min_frequency)],
                [h.head for h in select_heads(b, rule, min_score, min_frequency)],
            )
            for rule in RULES
        }
        pair = {
            "jaccard": stats.jaccard(*sets["documented"]),
            "jaccard_authors": stats.jaccard(*sets["authors"]),
            "top10": stats.top_k_overlap(rank_a, rank_b, 10),
            "top20": stats.top_k_overlap(rank_a, rank_b, 20),
            "pearson": stats.pearson([a.means[h] for h in heads], [b.means[h] for h in heads]),
            "spearman": stats.spearman([a.means[h] for h in heads], [b.means[h] for h in heads]),
        }
        key = f"{slug_a}__{slug_b}"
        report.numbers["pairs"][key] = pair
        path = report.add(figures.distinctness(a, b, pair, report.out / f"distinct_{key}.png"))
        note = "" if a.model == b.model else " (different models: head identities need not correspond)"
        warn = "".join(caveat(report.caveats[x.label]) for x in {a.label: a, b.label: b}.values()
                       if x.label in report.caveats)
        part.figure(path, f"{a.label} vs {b.label}{note}{warn}")
        report.lines.append(
            f"{a.label} vs {b.label}: Jaccard {pair['jaccard']:.3f} (authors' rule "
            f"{pair['jaccard_authors']:.3f}), top-10 overlap {pair['top10']:.2f}, "
            f"top-20 {pair['top20']:.2f}, "
            f"Pearson {fmt(pair['pearson'])}, Spearman {fmt(pair['spearman'])}{note}"
        )
    return part if part.parts else None
