"""Assemble the report: load score files, compute the numbers, draw the figures, write index.html."""

from __future__ import annotations

import html
import itertools
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ocr_heads.core.heads import all_heads, parse_head
from ocr_heads.core.io import read_json
from ocr_heads.core.provenance import note_of
from ocr_heads.report import figures, stats, tables
from ocr_heads.scores.files import KINDS, ScoreFile, load_scores
from ocr_heads.scores.selection import DEFAULT_MIN_FREQUENCY, DEFAULT_MIN_SCORE, RULES, select_heads

logger = logging.getLogger(__name__)


@dataclass
class ReportResult:
    out_dir: Path
    index: Path
    figures: list[Path]
    summary: str
    numbers: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Section:
    title: str
    parts: list[str] = field(default_factory=list)

    def figure(self, path: Path, caption: str) -> None:
        self.parts.append(
            f'<figure><img src="{html.escape(path.name)}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )

    def text(self, text: str) -> None:
        self.parts.append(f"<p>{html.escape(text)}</p>")

    def raw(self, markup: str) -> None:
        self.parts.append(markup)


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


def _fmt(value: float, digits: int = 3) -> str:
    """A number for captions and the summary; a correlation of constant data reads "n/a", not "nan"."""
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _caveat(note: str) -> str:
    return f" [{note}]" if note else ""


def _no_data_reason(scores_file: ScoreFile) -> str | None:
    """Why a score file has nothing to draw (no events at all, or every head the same), else None."""
    if all(not values for values in scores_file.per_head.values()):
        return "it holds no events (the model never wrote an answer token)"
    if len(set(scores_file.means.values())) <= 1:
        return f"every head has the same score ({next(iter(scores_file.means.values())):g})"
    return None


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


def build_report(
    scores: Sequence[str | Path | ScoreFile],
    out_dir: str | Path,
    results_dir: str | Path | None = None,
    case: str | Path | None = None,
    kinds: str | Sequence[str] | None = None,
    models: str | Sequence[str] | None = None,
    min_score: float = DEFAULT_MIN_SCORE,
    min_frequency: float = DEFAULT_MIN_FREQUENCY,
) -> ReportResult:
    """Write ``out_dir/index.html`` and one PNG per figure; return the paths, a text summary, the numbers."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = _load_all(scores, kinds, models)
    if not files and case is None:
        raise ValueError("nothing to report: give score files and/or a case-study file")
    sections: list[_Section] = []
    written: list[Path] = []
    lines: list[str] = []
    numbers: dict[str, Any] = {"files": {}, "pairs": {}}
    caveats: dict[str, str] = {}  # label -> note, for the header and the summary

    slugs: list[str] = []
    for scores_file in files:
        base = _slug(scores_file.path.stem if scores_file.path else scores_file.label)
        slug, copy = base, 2
        while slug in slugs:  # two files with the same name from different folders
            slug, copy = f"{base}-{copy}", copy + 1
        slugs.append(slug)

    thresholds = f"mean >= {min_score}, frequency threshold {min_frequency}"
    per_file = _Section("Score maps and selected heads")
    per_file.text(
        f"Selection: {thresholds}. Documented rule: non-zero fraction >= threshold; authors' rule "
        "(their released code): zero fraction > threshold. Dots mark heads selected by the documented rule."
    )
    activation = _Section("Static activation: activation frequency vs mean score")
    counts: dict[str, dict[str, int]] = {}
    drawable: list[ScoreFile] = []
    for scores_file, slug in zip(files, slugs, strict=True):
        note = note_of(scores_file.meta)
        if note:
            caveats[scores_file.label] = note
        chosen = {rule: select_heads(scores_file, rule, min_score, min_frequency) for rule in RULES}
        counts[scores_file.label] = {rule: len(heads) for rule, heads in chosen.items()}
        total = scores_file.num_layers * scores_file.num_heads
        frequencies = scores_file.frequencies()
        freq = [frequencies[head] for head in scores_file.heads]
        mean = [scores_file.means[head] for head in scores_file.heads]
        act = {"pearson": stats.pearson(freq, mean), "spearman": stats.spearman(freq, mean)}
        numbers["files"][slug] = {
            "label": scores_file.label,
            "kind": scores_file.kind,
            "model": scores_file.model,
            "num_layers": scores_file.num_layers,
            "num_heads": scores_file.num_heads,
            "not_scoreable_layers": scores_file.not_scoreable_layers,
            "selected": {rule: [entry.head for entry in heads] for rule, heads in chosen.items()},
            "heads_for_half_mass": stats.heads_for_mass(mean, 0.5),
            "activation": act,
        }
        lines.append(
            f"{scores_file.label}  [{scores_file.path}]  {scores_file.num_layers} layers x "
            f"{scores_file.num_heads} heads"
        )
        if scores_file.not_scoreable_layers:
            lines.append(f"  not scoreable (no attention rows, e.g. linear attention): layers "
                         f"{', '.join(map(str, scores_file.not_scoreable_layers))}")
        for rule in RULES:
            top = ", ".join(f"{entry.head} {entry.score:.3f}" for entry in chosen[rule][:10])
            lines.append(f"  {rule:>10} rule: {len(chosen[rule])}/{total} heads selected; top-10: {top}")
        lines.append(
            f"  half of the total score sits in the best {numbers['files'][slug]['heads_for_half_mass']} "
            f"heads; frequency vs score: Pearson {_fmt(act['pearson'])}, Spearman {_fmt(act['spearman'])}"
        )
        reason = _no_data_reason(scores_file)
        if reason is not None:
            per_file.text(f"{scores_file.label}: no figures, {reason}.{_caveat(note)}")
            lines.append(f"  no figures: {reason}")
            continue
        drawable.append(scores_file)
        selected_names = [entry.head for entry in chosen["documented"]]
        path = figures.heatmap(scores_file, selected_names, out / f"heatmap_{slug}.png")
        written.append(path)
        per_file.figure(
            path,
            f"{scores_file.label}: {counts[scores_file.label]['documented']} heads (documented), "
            f"{counts[scores_file.label]['authors']} heads (authors' rule) of {total}{_caveat(note)}",
        )
        per_file.raw(_top_table(chosen, scores_file.label))
        path = figures.activation(scores_file, act, out / f"activation_{slug}.png")
        written.append(path)
        activation.figure(
            path,
            f"{scores_file.label}: Pearson {_fmt(act['pearson'])}, Spearman {_fmt(act['spearman'])}"
            f"{_caveat(note)}",
        )
    if files:
        sections.append(per_file)
        sparsity = _Section("Sparsity")
        if drawable:
            path = figures.sparsity(drawable, counts, out / "sparsity.png")
            written.append(path)
            notes = "".join(_caveat(caveats[f.label]) for f in drawable if f.label in caveats)
            sparsity.figure(
                path,
                "Heads above threshold, score distribution (the paper's buckets) and cumulative score "
                f"mass (how many heads hold how much of the total score).{notes}",
            )
        else:
            sparsity.text("No sparsity figure: no score file has scores that differ between heads.")
        sections.append(sparsity)
        kept = [(f, slug) for f, slug in zip(files, slugs, strict=True) if f in drawable]
        distinct = _distinctness([f for f, _ in kept], [slug for _, slug in kept], out, numbers, written, lines,
                                 min_score, min_frequency, caveats)
        if distinct is not None:
            sections.append(distinct)
        if activation.parts:
            sections.append(activation)

    if results_dir is not None:
        sections.extend(_result_tables(Path(results_dir), out, written, lines, caveats))
    if case is not None:
        sections.append(_case_section(Path(case), out, written, lines, numbers, caveats))

    index = out / "index.html"
    index.write_text(_html(sections, files, thresholds, caveats))
    written.append(index)
    numbers["caveats"] = caveats
    lines[:0] = [f"CAVEAT {label}: {note}" for label, note in caveats.items()]
    lines.append(f"report: {index}")
    return ReportResult(out, index, written, "\n".join(lines), numbers)


def _top_table(chosen: dict[str, list], label: str) -> str:
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


def _distinctness(
    files: list[ScoreFile],
    slugs: list[str],
    out: Path,
    numbers: dict,
    written: list[Path],
    lines: list[str],
    min_score: float,
    min_frequency: float,
    caveats: dict[str, str],
) -> _Section | None:
    """Overlap and correlation for every pair of files over the same head grid (OCR on the x axis)."""
    section = _Section("Distinctness: do OCR and retrieval heads differ?")
    for (a, slug_a), (b, slug_b) in itertools.combinations(zip(files, slugs, strict=True), 2):
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
        numbers["pairs"][key] = pair
        path = figures.distinctness(a, b, pair, out / f"distinct_{key}.png")
        written.append(path)
        note = "" if a.model == b.model else " (different models: head identities need not correspond)"
        warn = "".join(_caveat(caveats[x.label]) for x in {a.label: a, b.label: b}.values() if x.label in caveats)
        section.figure(path, f"{a.label} vs {b.label}{note}{warn}")
        lines.append(
            f"{a.label} vs {b.label}: Jaccard {pair['jaccard']:.3f} (authors' rule "
            f"{pair['jaccard_authors']:.3f}), top-10 overlap {pair['top10']:.2f}, "
            f"top-20 {pair['top20']:.2f}, "
            f"Pearson {_fmt(pair['pearson'])}, Spearman {_fmt(pair['spearman'])}{note}"
        )
    return section if section.parts else None


def _result_tables(results: Path, out: Path, written: list[Path], lines: list[str],
                   caveats: dict[str, str]) -> list[_Section]:
    # Imported here: the registry loads the interventions (torch), which a report of score files alone never needs.
    from ocr_heads.experiments.registry import all_experiments

    sections = []
    for name, experiment in all_experiments().items():  # every registered experiment's results CSV
        title = experiment.title or name
        frame = tables.load_results(results / f"{name}.csv")
        if frame is None:
            continue
        table = tables.pivot(frame)
        path = out / f"{name}_table.csv"
        tables.flat(table).to_csv(path, index=False)
        written.append(path)
        model_notes = tables.notes(frame)
        caveats.update({f"{model} ({name})": note for model, note in model_notes.items()})
        section = _Section(f"{title} ({results / f'{name}.csv'})")
        section.text("Mean over seeds only (never over models, protocols or datasets); rows: model, protocol, "
                     "dataset, task, metric; columns: head set, k."
                     + "".join(f" {model}: {note}." for model, note in model_notes.items()))
        section.raw(table.to_html(na_rep=""))
        section.raw(tables.seeds_and_samples(frame).to_html())
        sections.append(section)
        lines.append(f"{title} table ({len(frame)} rows):\n{table.to_string()}")
    return sections


def load_case(path: str | Path) -> tuple[str, list[str], np.ndarray]:
    """Read ``{"model": M, "chars": {"0": {"l0_h0": s, ...}, ...}}`` -> (model, chars, maps).

    ``maps`` has shape (characters, layers, heads); every character must score the same full head grid.
    """
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("chars"), dict) or not data["chars"]:
        raise ValueError(f"{path}: expected {{'model': ..., 'chars': {{'0': {{'l0_h0': score, ...}}, ...}}}}")
    chars = list(data["chars"])
    first = data["chars"][chars[0]]
    cells = [parse_head(name) for name in first]
    num_layers, num_heads = max(c[0] for c in cells) + 1, max(c[1] for c in cells) + 1
    expected = set(all_heads(num_layers, num_heads))
    maps = np.zeros((len(chars), num_layers, num_heads))
    for index, char in enumerate(chars):
        scores = data["chars"][char]
        if set(scores) != expected:
            raise ValueError(
                f"{path}: character {char!r} does not score the full {num_layers} x {num_heads} head grid"
            )
        for name, value in scores.items():
            layer, head = parse_head(name)
            maps[index, layer, head] = float(value)
    return str(data.get("model", Path(path).stem)), chars, maps


def _case_section(path: Path, out: Path, written: list[Path], lines: list[str], numbers: dict,
                  caveats: dict[str, str]) -> _Section:
    model, all_chars, all_maps = load_case(path)
    meta_path = path.with_name(path.name.removesuffix(".json") + ".meta.json")
    meta = read_json(meta_path) if meta_path.is_file() else {}
    note = note_of(meta)
    if note:
        caveats[f"{model} (case study)"] = note
    # A character the model never wrote has no event: its all-zero map says nothing, so it is not drawn.
    keep = [i for i in range(len(all_chars)) if all_maps[i].any()]
    chars, maps = [all_chars[i] for i in keep], all_maps[keep]
    num_heads = all_maps.shape[2]
    section = _Section(f"Case study: single-character passkeys ({model})")
    dropped = [c for c in all_chars if c not in chars]
    if dropped:
        section.text(f"{len(dropped)} of {len(all_chars)} characters have no scored event (the model never wrote "
                     f"them, or no head read them): {''.join(dropped)}; not drawn.{_caveat(note)}")
    if not chars:
        section.text("No case-study figures: no character has a non-zero head map.")
        lines.append(f"case study {model}: no character with a non-zero map; no figures")
        numbers["case"] = {"model": model, "chars": [], "dropped": dropped}
        return section
    events = meta.get("events_per_char", {})
    counts = f" Events per character: {', '.join(f'{c} {events[c]}' for c in chars if c in events)}." if events else ""
    figure = figures.case_heatmaps(chars, maps, model, out / "case_heatmaps.png")
    similarity = stats.cosine_matrix(maps.reshape(len(chars), -1))
    sim_figure = figures.case_similarity(chars, similarity, model, out / "case_similarity.png")
    written += [figure, sim_figure]
    section.figure(figure, f"Per-character head score maps (shared colour scale).{counts}{_caveat(note)}")
    section.figure(sim_figure, f"Cosine similarity of the characters' head maps.{_caveat(note)}")
    top: dict[str, list[str]] = {}
    rows = []
    for index, char in enumerate(chars):
        flat = maps[index].reshape(-1)
        order = np.argsort(-flat, kind="stable")[:5]  # stable: ties in layer-major order
        top[char] = [f"l{i // num_heads}_h{i % num_heads}" for i in order]
        cells = "".join(f"<td>{name} {flat[i]:.3f}</td>" for name, i in zip(top[char], order, strict=True))
        rows.append(f"<tr><th>{html.escape(char)}</th>{cells}</tr>")
    section.raw(f"<table><caption>top-5 heads per character</caption>{''.join(rows)}</table>")
    off_diagonal = similarity[~np.eye(len(chars), dtype=bool)]
    mean_similarity = float(off_diagonal.mean()) if off_diagonal.size else float("nan")
    numbers["case"] = {"model": model, "chars": chars, "top5": top, "mean_similarity": mean_similarity,
                       "dropped": dropped}
    lines.append(
        f"case study {model}: {len(chars)} characters drawn ({len(dropped)} without events), mean pairwise "
        f"cosine similarity {_fmt(mean_similarity)}"
    )
    return section


_STYLE = """body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}
img{max-width:100%;border:1px solid #ddd}figure{margin:1em 0}figcaption{font-size:0.9em;color:#555}
table{border-collapse:collapse;margin:1em 0;font-size:0.85em}td,th{border:1px solid #ccc;padding:2px 6px}
caption{font-weight:bold;text-align:left}.caveat{background:#fff3cd;border:1px solid #e0c060;padding:4px 12px}"""


def _html(sections: list[_Section], files: list[ScoreFile], thresholds: str, caveats: dict[str, str]) -> str:
    sources = "".join(
        f"<li>{html.escape(s.label)}: <code>{html.escape(str(s.path))}</code></li>" for s in files
    )
    warning = "".join(f"<li><b>{html.escape(label)}</b>: {html.escape(note)}</li>" for label, note in caveats.items())
    warning = f"<div class='caveat'><b>Caveats</b><ul>{warning}</ul></div>" if warning else ""
    body = "".join(f"<h2>{html.escape(s.title)}</h2>{''.join(s.parts)}" for s in sections)
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>ocr-heads report</title>"
        f"<style>{_STYLE}</style></head><body><h1>ocr-heads report</h1>"
        f"{warning}<p>Thresholds: {html.escape(thresholds)}.</p><ul>{sources}</ul>{body}</body></html>\n"
    )
