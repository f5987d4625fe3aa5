"""What every section builder shares: the Section it returns and the Report it adds figures, numbers,
summary lines and caveats to."""

from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Section:
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


@dataclass
class Report:
    """The report being built: its folder, the files written, the text summary, the numbers, the caveats."""

    out: Path
    written: list[Path] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=lambda: {"files": {}, "pairs": {}})
    caveats: dict[str, str] = field(default_factory=dict)  # label -> note, for the header and the summary

    def add(self, path: Path) -> Path:
        self.written.append(path)
        return path


def shown(path: Path | str, out: Path) -> str:
    """A path as the report prints it: relative to the report's folder (no machine's absolute paths)."""
    return os.path.relpath(Path(path).resolve(), Path(out).resolve())


def fmt(value: float, digits: int = 3) -> str:
    """A number for captions and the summary; a correlation of constant data reads "n/a", not "nan"."""
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def caveat(note: str) -> str:
    return f" [{note}]" if note else ""
