"""Section "Case study": per-character head score maps of single-character passkeys, and how alike they are."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from ocr_heads.core.heads import all_heads, parse_head
from ocr_heads.core.io import read_json
from ocr_heads.core.provenance import note_of
from ocr_heads.report import figures, stats
from ocr_heads.report.sections.common import Report, Section, caveat, fmt


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


def section(path: Path, report: Report) -> Section:
    model, all_chars, all_maps = load_case(path)
    meta_path = path.with_name(path.name.removesuffix(".json") + ".meta.json")
    meta = read_json(meta_path) if meta_path.is_file() else {}
    note = note_of(meta)
    if note:
        report.caveats[f"{model} (case study)"] = note
    # A character the model never wrote has no event: its all-zero map says nothing, so it is not drawn.
    keep = [i for i in range(len(all_chars)) if all_maps[i].any()]
    chars, maps = [all_chars[i] for i in keep], all_maps[keep]
    num_heads = all_maps.shape[2]
    # Say where the maps came from: built from a step2 run's events (multi-digit passkeys, grouped by the
    # character each event reads), or from single-character passkeys scored one character at a time.
    source = meta.get("source")
    what = (f"answer characters of step2 events ({Path(source).name})" if source
            else "single-character passkeys (exp_case)")
    section = Section(f"Case study: {what} ({model})")
    dropped = [c for c in all_chars if c not in chars]
    if dropped:
        section.text(f"{len(dropped)} of {len(all_chars)} characters have no scored event (the model never wrote "
                     f"them, or no head read them): {''.join(dropped)}; not drawn.{caveat(note)}")
    if not chars:
        section.text("No case-study figures: no character has a non-zero head map.")
        report.lines.append(f"case study {model}: no character with a non-zero map; no figures")
        report.numbers["case"] = {"model": model, "chars": [], "dropped": dropped}
        return section
    events = meta.get("events_per_char", {})
    counts = f" Events per character: {', '.join(f'{c} {events[c]}' for c in chars if c in events)}." if events else ""
    figure = figures.case_heatmaps(chars, maps, model, report.out / "case_heatmaps.png")
    similarity = stats.cosine_matrix(maps.reshape(len(chars), -1))
    sim_figure = figures.case_similarity(chars, similarity, model, report.out / "case_similarity.png")
    report.written += [figure, sim_figure]
    section.figure(figure, f"Per-character head score maps (shared colour scale).{counts}{caveat(note)}")
    section.figure(sim_figure, f"Cosine similarity of the characters' head maps.{caveat(note)}")
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
    report.numbers["case"] = {"model": model, "chars": chars, "top5": top, "mean_similarity": mean_similarity,
                       "dropped": dropped}
    report.lines.append(
        f"case study {model}: {len(chars)} characters drawn ({len(dropped)} without events), mean pairwise "
        f"cosine similarity {fmt(mean_similarity)}"
    )
    return section
