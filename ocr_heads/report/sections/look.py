"""Section "Where the model looks": a look folder (``python -m ocr_heads.look``) linked into the report: its
viewer, one overlay per answer token and the heads that look at each answer character."""

from __future__ import annotations

import html
from pathlib import Path

from ocr_heads.core.io import read_json
from ocr_heads.report.sections.common import Report, Section, shown

LOOK_FILE = "look.json"


def section(folder: Path, report: Report) -> Section:
    meta_path = folder / LOOK_FILE
    if not meta_path.is_file():
        raise ValueError(f"--look {folder}: no {LOOK_FILE} (make the folder with python -m ocr_heads.look)")
    meta = read_json(meta_path)
    if note := meta.get("model_note"):
        report.caveats[f"{meta.get('model')} (look)"] = note
    part = Section(f"Where the model looks ({shown(folder, report.out)}: {meta.get('model')}, "
                   f"protocol {meta.get('protocol')})")
    viewer = folder / "index.html"
    if viewer.is_file():
        part.raw(f"<p><a href='{html.escape(shown(viewer, report.out))}'>Open the viewer</a>: every output token's "
                 "attention on the page, per head, head set or layer range.</p>")
    part.text(f"Question: {meta.get('question')} Answer: {meta.get('answer')!r}.")
    for overlay in meta.get("overlays", [])[:8]:
        name = overlay["file"]
        label = f"step {overlay['step']}: token {overlay['piece']!r} ({overlay['heads']})"
        part.raw(f"<figure><img src='{html.escape(shown(folder / name, report.out))}' alt='{html.escape(label)}'>"
                 f"<figcaption>{html.escape(label)}</figcaption></figure>")
    lines = [f"{row.get('char')!r} (step {row.get('step')}): "
             + ", ".join(f"{h['head']} {h['mass']:.2f}" for h in row.get("mass_heads", [])[:5])
             for row in meta.get("answer_heads", [])]
    if lines:
        part.raw("<p>Heads with the most mass on each answer character's tiles when it was produced:</p><ul>"
                 + "".join(f"<li>{html.escape(line)}</li>" for line in lines) + "</ul>")
    report.lines.append(f"look: {shown(folder, report.out)} ({len(meta.get('pieces', []))} steps)")
    return part
