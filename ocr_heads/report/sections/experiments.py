"""Sections of the experiments' results: one table per registered experiment whose CSV is in the results folder."""

from __future__ import annotations

import html
import shutil
from pathlib import Path

import pandas as pd

from ocr_heads.experiments.registry import all_experiments
from ocr_heads.report import tables
from ocr_heads.report.sections.common import Report, Section, shown
from ocr_heads.tasks.prompting import COT, RECONSTRUCTED

HEAD_SOURCE = {"image": "OCR heads (image)", "text": "retrieval heads (text)"}


def with_choices_in_head_set(frame: pd.DataFrame, choices) -> pd.DataFrame:
    """A choice other than its default (masking's mask_mode image_keys) joins the head set's name, ``top
    [image_keys]``, so that each mode gets its own column beside the same head set's plain masking."""
    for choice in choices:
        if choice.name not in frame:
            continue
        value = frame[choice.name].fillna(choice.default).astype(str)
        changed = value != choice.default
        frame.loc[changed, "head_set"] = frame.loc[changed, "head_set"] + " [" + value[changed] + "]"
        frame = frame.drop(columns=choice.name)
    return frame


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
        frame = with_choices_in_head_set(frame, experiment.choices)
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
                  "metric; columns: head set (with a mask mode other than output in brackets: the heads cut off "
                  "that key group instead of zeroed), k."
                  + "".join(f" {model}: {note}." for model, note in model_notes.items()))
        if "prompt" in frame.columns and (frame["prompt"] == COT).any():
            part.text(f"Rows with prompt cot (chain of thought): {RECONSTRUCTED}.")
        part.raw(table.to_html(na_rep=""))
        part.raw(tables.seeds_and_samples(frame).to_html())
        _reading_figures(results / name, part, report)
        found.append(part)
        report.lines.append(f"{title} table ({len(frame)} rows):\n{table.to_string()}")
    redirect = redirect_section(results, report)
    return found + ([redirect] if redirect else [])


def _reading_figures(folder: Path, part: Section, report: Report) -> None:
    """Link the reading figures of ``--record_reading`` runs (``MODEL/DATASET.reading.png``) into the section."""
    for path in sorted(folder.glob("*/*.reading.png")):
        caption = (f"{path.parent.name}, {path.name.removesuffix('.reading.png')}: when, along the answer, the "
                   "reading heads' argmax lies on the page / the evidence, and their attention mass there (direct "
                   f"and cot side by side; CoT: {RECONSTRUCTED})")
        part.raw(f"<figure><img src='{html.escape(shown(path, report.out))}' alt='{html.escape(caption)}'>"
                 f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def redirect_section(results: Path, report: Report) -> Section | None:
    """exp_redirect's rates (``results/redirect.csv``): per head set, k and alpha, the mean over seeds and, for the
    random heads, the spread over seeds; its figure when present."""
    path = results / "redirect.csv"
    if not path.is_file():
        return None
    frame = pd.read_csv(path, dtype={"note": str}).fillna({"note": "", "seed": -1})
    table = (frame.groupby(["model", "head_set", "k", "alpha"])
             .agg(seeds=("seed", "size"), n=("n", "sum"), steered=("steered", "mean"),
                  steered_min=("steered", "min"), steered_max=("steered", "max"), kept=("kept", "mean"),
                  other=("other", "mean")).round(3))
    part = Section(f"Redirect ({shown(path, report.out)})")
    part.text("While the model writes passkey character i (teacher-forced), the heads' row producing it moves a "
              "share alpha of its attention on character i's tiles onto another character j's tiles: steered = "
              "the output became j, kept = stayed i, other = anything else; only characters the unedited model "
              "writes right count (n: events summed over seeds). Controls: k random heads (mean, min and max "
              "over seeds) and the top heads redirected to a blank region (as many ink-free tiles near j)."
              + "".join(f" {model}: {note}." for model, note in tables.notes(frame).items()))
    part.raw(table.to_html())
    figure = results / "redirect.png"
    if figure.is_file():
        copied = report.add(Path(shutil.copy(figure, report.out / figure.name)))
        part.figure(copied, "steered rate against alpha: top heads, random heads (band: min-max over "
                    "seeds), blank region")
    report.lines.append(f"Redirect table ({len(frame)} rows):\n{table.to_string()}")
    return part
