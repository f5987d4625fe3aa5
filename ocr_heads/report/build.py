"""Assemble the report: load score files, let one builder per section draw its figures and tables
(:mod:`ocr_heads.report.sections`), write index.html."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ocr_heads.report.base_llm import known_pairs
from ocr_heads.report.sections import (
    activation,
    case_study,
    distinctness,
    experiments,
    layers,
    look,
    score_maps,
    sparsity,
    validation,
)
from ocr_heads.report.sections.case_study import load_case
from ocr_heads.report.sections.common import Report, Section, shown
from ocr_heads.report.sections.files import summarise
from ocr_heads.scores.files import KINDS, ScoreFile, load_scores
from ocr_heads.scores.selection import DEFAULT_MIN_FREQUENCY, DEFAULT_MIN_SCORE

__all__ = ["ReportResult", "build_report", "load_case"]


@dataclass
class ReportResult:
    out_dir: Path
    index: Path
    figures: list[Path]
    summary: str
    numbers: dict[str, Any] = field(default_factory=dict)


def _split_override(value: str | Sequence[str] | None, count: int, what: str) -> list[str | None]:
    """``"ocr"`` -> the same for every file; ``"ocr,retrieval"`` -> one per file."""
    if value is None:
        return [None] * count
    items = value.split(",") if isinstance(value, str) else list(value)
    if len(items) == 1:
        return items * count
    if len(items) != count:
        raise ValueError(
            f"--{what} has {len(items)} entries for {count} score files (give one, or one per file)"
        )
    return items


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "scores"


def _load_all(
    paths: Sequence[str | Path | ScoreFile],
    kinds: str | Sequence[str] | None,
    models: str | Sequence[str] | None,
) -> list[ScoreFile]:
    files = [item if isinstance(item, ScoreFile) else load_scores(item) for item in paths]
    for scores, kind, model in zip(
        files,
        _split_override(kinds, len(files), "kind"),
        _split_override(models, len(files), "model"),
        strict=True,
    ):
        if kind is not None:
            if kind not in KINDS:
                raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
            scores.kind = kind
        if model is not None:
            scores.model = model
    return files


def _slugs(files: list[ScoreFile]) -> list[str]:
    slugs: list[str] = []
    for scores_file in files:
        base = _slug(scores_file.path.stem if scores_file.path else scores_file.label)
        slug, copy = base, 2
        while slug in slugs:  # two files with the same name from different folders
            slug, copy = f"{base}-{copy}", copy + 1
        slugs.append(slug)
    return slugs


def build_report(
    scores: Sequence[str | Path | ScoreFile],
    out_dir: str | Path,
    results_dir: str | Path | None = None,
    case: str | Path | None = None,
    kinds: str | Sequence[str] | None = None,
    models: str | Sequence[str] | None = None,
    min_score: float = DEFAULT_MIN_SCORE,
    min_frequency: float = DEFAULT_MIN_FREQUENCY,
    look_dir: str | Path | None = None,
    base_llm: Sequence[tuple[str | Path, str | Path]] | None = None,
    validate_dir: str | Path | None = None,
) -> ReportResult:
    """Write ``out_dir/index.html`` and one PNG per figure; return the paths, a text summary, the numbers.

    ``base_llm``: (VLM OCR score file, its base LLM's retrieval score file) pairs for the paper's sparsity
    comparison; without it, pairs of the paper's models found among ``scores`` (:mod:`ocr_heads.report.base_llm`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = _load_all(scores, kinds, models)
    if not files and case is None and look_dir is None and validate_dir is None:
        raise ValueError("nothing to report: give score files, a case-study file, a look folder and/or an "
                         "exp_validate folder")
    report = Report(out)
    thresholds = f"mean >= {min_score}, frequency threshold {min_frequency}"
    summaries = [summarise(f, slug, report, min_score, min_frequency) for f, slug in zip(files, _slugs(files),
                                                                                        strict=True)]
    sections: list[Section | None] = []
    if files:
        pairs = _base_llm_pairs(files, base_llm)
        sections += [score_maps.section(summaries, report, thresholds), layers.section(summaries, report),
                     sparsity.section(summaries, report, pairs),
                     distinctness.section(summaries, report, min_score, min_frequency),
                     activation.section(summaries, report)]
    if results_dir is not None:
        sections += experiments.sections(Path(results_dir), report)
    if case is not None:
        sections.append(case_study.section(Path(case), report))
    if look_dir is not None:
        sections.append(look.section(Path(look_dir), report))
    if validate_dir is not None:
        sections.append(validation.section(Path(validate_dir), report))

    index = out / "index.html"
    index.write_text(_html([s for s in sections if s is not None], files, thresholds, report.caveats, out))
    report.add(index)
    report.numbers["caveats"] = report.caveats
    lines = [f"CAVEAT {label}: {note}" for label, note in report.caveats.items()] + report.lines
    lines.append(f"report: {index}")
    return ReportResult(out, index, report.written, "\n".join(lines), report.numbers)


def _base_llm_pairs(files: list[ScoreFile], given: Sequence[tuple[str | Path, str | Path]] | None,
                    ) -> list[tuple[ScoreFile, ScoreFile]]:
    """The given pairs (a file already among ``files`` is reused, its overrides kept), else the known ones."""
    if not given:
        return known_pairs(files)
    loaded = {f.path.resolve(): f for f in files if f.path is not None}
    pairs = []
    for vlm_path, llm_path in given:
        vlm, llm = (loaded.get(Path(p).resolve()) or load_scores(p) for p in (vlm_path, llm_path))
        if vlm.kind == "retrieval" or llm.kind == "ocr":
            raise ValueError(f"--base_llm {vlm_path}={llm_path}: expected an OCR score file, then a retrieval "
                             f"score file (got {vlm.kind} and {llm.kind})")
        pairs.append((vlm, llm))
    return pairs


_STYLE = """body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}
img{max-width:100%;border:1px solid #ddd}figure{margin:1em 0}figcaption{font-size:0.9em;color:#555}
table{border-collapse:collapse;margin:1em 0;font-size:0.85em}td,th{border:1px solid #ccc;padding:2px 6px}
caption{font-weight:bold;text-align:left}.caveat{background:#fff3cd;border:1px solid #e0c060;padding:4px 12px}"""


def _html(sections: list[Section], files: list[ScoreFile], thresholds: str, caveats: dict[str, str],
          out: Path) -> str:
    sources = "".join(
        f"<li>{html.escape(s.label)}: <code>{html.escape(shown(s.path, out))}</code></li>" for s in files
    )
    warning = "".join(f"<li><b>{html.escape(label)}</b>: {html.escape(note)}</li>" for label, note in caveats.items())
    warning = f"<div class='caveat'><b>Caveats</b><ul>{warning}</ul></div>" if warning else ""
    body = "".join(f"<h2>{html.escape(s.title)}</h2>{''.join(s.parts)}" for s in sections)
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>ocr-heads report</title>"
        f"<style>{_STYLE}</style></head><body><h1>ocr-heads report</h1>"
        f"{warning}<p>Thresholds: {html.escape(thresholds)}.</p><ul>{sources}</ul>{body}</body></html>\n"
    )
