"""Per score file, what several sections need: its selections under both rules, head counts, the frequency vs
score correlation, and its lines of the text summary."""

from __future__ import annotations

from dataclasses import dataclass

from ocr_heads.core.provenance import note_of
from ocr_heads.report import stats
from ocr_heads.report.sections.common import Report, fmt, shown
from ocr_heads.scores.files import ScoreFile
from ocr_heads.scores.selection import RULES, SelectedHead, select_heads


@dataclass
class FileSummary:
    scores: ScoreFile
    slug: str
    note: str  # the caveat recorded with the scores ("" if none)
    chosen: dict[str, list[SelectedHead]]  # rule -> selected heads, ranked
    activation: dict[str, float]  # frequency vs mean score: pearson, spearman
    no_data: str | None  # why there is nothing to draw, else None

    @property
    def total(self) -> int:
        return self.scores.num_layers * self.scores.num_heads

    def count(self, rule: str) -> int:
        return len(self.chosen[rule])


def _no_data_reason(scores_file: ScoreFile) -> str | None:
    """Why a score file has nothing to draw (no events at all, or every head the same), else None."""
    if all(not values for values in scores_file.per_head.values()):
        return "it holds no events (the model never wrote an answer token)"
    if len(set(scores_file.means.values())) <= 1:
        return f"every head has the same score ({next(iter(scores_file.means.values())):g})"
    return None


def summarise(scores_file: ScoreFile, slug: str, report: Report, min_score: float,
              min_frequency: float) -> FileSummary:
    """Select, count and correlate one file; record its numbers, caveat and summary lines in ``report``."""
    note = note_of(scores_file.meta)
    if note:
        report.caveats[scores_file.label] = note
    chosen = {rule: select_heads(scores_file, rule, min_score, min_frequency) for rule in RULES}
    frequencies = scores_file.frequencies()
    freq = [frequencies[head] for head in scores_file.heads]
    mean = [scores_file.means[head] for head in scores_file.heads]
    act = {"pearson": stats.pearson(freq, mean), "spearman": stats.spearman(freq, mean)}
    summary = FileSummary(scores_file, slug, note, chosen, act, _no_data_reason(scores_file))
    half_mass = stats.heads_for_mass(mean, 0.5)
    report.numbers["files"][slug] = {
        "label": scores_file.label,
        "kind": scores_file.kind,
        "model": scores_file.model,
        "num_layers": scores_file.num_layers,
        "num_heads": scores_file.num_heads,
        "not_scoreable_layers": scores_file.not_scoreable_layers,
        "selected": {rule: [entry.head for entry in heads] for rule, heads in chosen.items()},
        "heads_for_half_mass": half_mass,
        "activation": act,
    }
    lines = report.lines
    lines.append(
        f"{scores_file.label}  [{shown(scores_file.path, report.out)}]  {scores_file.num_layers} layers x "
        f"{scores_file.num_heads} heads"
    )
    if scores_file.not_scoreable_layers:
        lines.append(f"  not scoreable (no attention rows, e.g. linear attention): layers "
                     f"{', '.join(map(str, scores_file.not_scoreable_layers))}")
    for rule in RULES:
        top = ", ".join(f"{entry.head} {entry.score:.3f}" for entry in chosen[rule][:10])
        lines.append(f"  {rule:>10} rule: {summary.count(rule)}/{summary.total} heads selected; top-10: {top}")
    lines.append(
        f"  half of the total score sits in the best {half_mass} "
        f"heads; frequency vs score: Pearson {fmt(act['pearson'])}, Spearman {fmt(act['spearman'])}"
    )
    if summary.no_data is not None:
        lines.append(f"  no figures: {summary.no_data}")
    return summary
