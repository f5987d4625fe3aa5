"""The reading-along-the-answer figure: when, along the answer, does the model read the page, and with which heads.

From the ``STEM.reading.csv`` files of ``exp_masking.py --record_reading`` (ocr_heads/experiments/reading.py): one
column of panels per prompt (direct, then cot, side by side), one line per head set. Top row: the share of the
reading heads (over heads and samples) whose argmax lies on the page (solid) and on the evidence (dashed) at each
generated step; bottom row: their mean attention mass there. A step counts only the samples still generating.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ocr_heads.report.figures import _save, plt
from ocr_heads.tasks.prompting import PROMPTS, RECONSTRUCTED


def load_reading(paths: list[Path]) -> pd.DataFrame:
    """The rows of the given reading CSVs together."""
    frames = [pd.read_csv(path, keep_default_na=True) for path in paths]
    frames = [frame for frame in frames if not frame.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def head_set_label(head_set: str, task: str) -> str:
    """A line's name: a ranked head set says whose heads it took (the grid runs top k of both)."""
    return f"{head_set} ({'OCR' if task == 'image' else 'retrieval'} heads)" if head_set.startswith("top") else head_set


def reading_curves(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (prompt, head set, step): the share of argmaxes on the page / evidence and the mean masses."""
    values = frame[["argmax_on_image", "argmax_on_evidence", "image_mass", "evidence_mass"]].apply(
        pd.to_numeric, errors="coerce")
    labels = [head_set_label(h, t) for h, t in zip(frame["head_set"], frame["task"], strict=True)]
    keyed = pd.concat([frame[["prompt", "step"]], pd.Series(labels, name="head_set", index=frame.index), values],
                      axis=1)
    return keyed.groupby(["prompt", "head_set", "step"], sort=True).mean().reset_index()


def reading_figure(paths: list[Path], out: Path, title: str, note: str = "") -> Path:
    """Draw the figure of the module docstring to ``out``; a CoT panel says its protocol is reconstructed."""
    curves = reading_curves(load_reading(paths)) if paths else pd.DataFrame()
    prompts = [p for p in PROMPTS if not curves.empty and p in set(curves["prompt"])] or list(PROMPTS[:1])
    fig, axes = plt.subplots(2, len(prompts), figsize=(5.5 * len(prompts), 6.5), squeeze=False, sharey="row")
    for column, prompt in enumerate(prompts):
        top, bottom = axes[0][column], axes[1][column]
        part = curves[curves["prompt"] == prompt] if not curves.empty else curves
        colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for number, (head_set, lines) in enumerate(part.groupby("head_set") if not part.empty else []):
            colour = colours[number % len(colours)]
            top.plot(lines["step"], lines["argmax_on_image"], color=colour, label=f"{head_set}: on page")
            bottom.plot(lines["step"], lines["image_mass"], color=colour, label=f"{head_set}: page mass")
            if lines["argmax_on_evidence"].notna().any():
                top.plot(lines["step"], lines["argmax_on_evidence"], color=colour, linestyle="--",
                         label=f"{head_set}: on evidence")
                bottom.plot(lines["step"], lines["evidence_mass"], color=colour, linestyle="--",
                            label=f"{head_set}: evidence mass")
        heading = prompt if prompt != "cot" else f"cot ({RECONSTRUCTED})"
        top.set_title(heading if not part.empty else f"{heading}: no reading recorded", fontsize=9)
        top.set_ylabel("share of reading heads' argmax")
        bottom.set_ylabel("mean attention mass")
        bottom.set_xlabel("generated step (0: the prefill's last row)")
        for ax in (top, bottom):
            ax.set_ylim(-0.02, 1.02)
            if column == 0 and ax.get_legend_handles_labels()[0]:  # the same lines in every column: one legend
                ax.legend(fontsize=7)
    caption = title + (f"\n{note}" if note else "")
    if "cot" in prompts:
        caption += f"\nCoT: {RECONSTRUCTED}"
    fig.suptitle(caption, fontsize=9)
    return _save(fig, out)
