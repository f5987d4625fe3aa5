"""Sections of the experiments' results: one table per registered experiment whose CSV is in the results folder."""

from __future__ import annotations

import html
from pathlib import Path

from ocr_heads.experiments.registry import all_experiments
from ocr_heads.report import tables
from ocr_heads.report.sections.common import Report, Section, shown
from ocr_heads.tasks.prompting import COT, RECONSTRUCTED

HEAD_SOURCE = {"image": "OCR heads (image)", "text": "retrieval heads (text)"}


def sections(results: Path, report: Report) -> list[Section]:
    # The registry lists the experiments and their titles without importing torch (tests/test_registry.py).
    found = []
    for name, experiment in all_experiments().items():
        title = experiment.title or name
        frame = tables.load_results(results / f"{name}.csv")
        if frame is None:
            continue
        # Name whose heads a row masks: --task image masks the OCR heads, --task text the retrieval heads;
        # the baseline and the random controls of that run sit in the same row.
        frame["task"] = frame["task"].map(lambda task: HEAD_SOURCE.get(task, task))
        table = tables.pivot(frame)
        path = report.out / f"{name}_table.csv"
        tables.flat(table).to_csv(path, index=False)
        report.add(path)
        model_notes = tables.notes(frame)
        report.caveats.update({f"{model} ({name})": note for model, note in model_notes.items()})
        part = Section(f"{title} ({shown(results / f'{name}.csv', report.out)})")
        part.text("Mean over seeds only, of rows equal in everything else (never over models, protocols, datasets, "
                  "n or options: such rows are shown apart, labelled by what differs); rows: model, protocol, "
                  "dataset, task (the head source: OCR heads from the image score, retrieval heads from the text "
                  "score; its row holds the unmodified baseline, the top-k heads and the random controls), "
                  "metric; columns: head set, k."
                  + "".join(f" {model}: {note}." for model, note in model_notes.items()))
        if "prompt" in frame.columns and (frame["prompt"] == COT).any():
            part.text(f"Rows with prompt cot (chain of thought): {RECONSTRUCTED}.")
        part.raw(table.to_html(na_rep=""))
        part.raw(tables.seeds_and_samples(frame).to_html())
        _reading_figures(results / name, part, report)
        found.append(part)
        report.lines.append(f"{title} table ({len(frame)} rows):\n{table.to_string()}")
    return found


def _reading_figures(folder: Path, part: Section, report: Report) -> None:
    """Link the reading figures of ``--record_reading`` runs (``MODEL/DATASET.reading.png``) into the section."""
    for path in sorted(folder.glob("*/*.reading.png")):
        caption = (f"{path.parent.name}, {path.name.removesuffix('.reading.png')}: when, along the answer, the "
                   "reading heads' argmax lies on the page / the evidence, and their attention mass there (direct "
                   f"and cot side by side; CoT: {RECONSTRUCTED})")
        part.raw(f"<figure><img src='{html.escape(shown(path, report.out))}' alt='{html.escape(caption)}'>"
                 f"<figcaption>{html.escape(caption)}</figcaption></figure>")
