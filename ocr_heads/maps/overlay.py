"""PNG overlays: one output token's map painted on the page, exactly: each image token's probability on the page
pixels of its box (the adapter's :class:`~ocr_heads.models.base.ImageTokens` boxes, as ``inspect`` draws them).

A page whose tokens cover it more than once (InternVL's tiles then thumbnail, LLaVA-OneVision's base image then
crops, SmolVLM's tiles then global image, Gemma 3's page then pan-and-scan crops) is drawn as several panels, one
per cover, in prompt order. A token that shows no page pixels (a row newline) is listed, not painted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image

matplotlib.use("Agg")  # headless
import matplotlib.pyplot as plt  # noqa: E402

COLOURMAP = "inferno"


@dataclass(frozen=True)
class Panel:
    """Image tokens of one page whose boxes do not overlap: one cover of the page."""

    page: int
    tokens: list[int]  # indices on the maps' last axis


def panels(tiles: np.ndarray, pages: list[int]) -> list[Panel]:
    """Split each page's tokens, in prompt order, into covers: a new cover starts at a token whose box overlaps
    one of the current cover's (a thumbnail after the tiles)."""
    out: list[Panel] = []
    for page in sorted(set(pages)):
        current: list[int] = []
        for index in (i for i, p in enumerate(pages) if p == page and not np.isnan(tiles[i]).any()):
            if current:
                box, taken = tiles[index], tiles[current]
                width = np.minimum(box[2], taken[:, 2]) - np.maximum(box[0], taken[:, 0])
                height = np.minimum(box[3], taken[:, 3]) - np.maximum(box[1], taken[:, 1])
                if ((width > 1e-6) & (height > 1e-6)).any():
                    out.append(Panel(page, current))
                    current = []
            current.append(index)
        if current:
            out.append(Panel(page, current))
    return out


def paint(size: tuple[int, int], tiles: np.ndarray, values: np.ndarray, tokens: list[int]) -> np.ndarray:
    """(height, width) page-pixel heat: each token's value on the pixels whose centres lie in its box; NaN
    elsewhere."""
    width, height = size
    heat = np.full((height, width), np.nan)
    for index in tokens:
        x0, y0, x1, y1 = tiles[index]
        # Pixel (c, r) covers [c, c+1) x [r, r+1): its centre c + 0.5 lies in [x0, x1) when c in [ceil(x0-.5), ...).
        c0, c1 = int(np.ceil(x0 - 0.5)), int(np.ceil(x1 - 0.5))
        r0, r1 = int(np.ceil(y0 - 0.5)), int(np.ceil(y1 - 0.5))
        heat[max(r0, 0) : min(r1, height), max(c0, 0) : min(c1, width)] = values[index]
    return heat


def draw(path: Path, page_images: list[Image.Image], tiles: np.ndarray, pages: list[int], values: np.ndarray,
         title: str) -> Path:
    """Write one overlay: every panel of every page with ``values`` (one per image token) painted, one colour scale
    (printed as a colour bar) for all, ``title`` on top, the tokens without pixels listed below."""
    covers = panels(tiles, pages)
    shown = [i for cover in covers for i in cover.tokens]
    top = float(np.nanmax(values[shown])) if shown else 1.0
    figure, axes = plt.subplots(1, len(covers), figsize=(4.5 * len(covers) + 1, 4.5), squeeze=False)
    image = None
    for axis, cover in zip(axes[0], covers, strict=True):
        page = page_images[cover.page]
        axis.imshow(np.asarray(page.convert("L")), cmap="gray", vmin=0, vmax=255)
        heat = paint(page.size, tiles, values, cover.tokens)
        image = axis.imshow(heat, cmap=COLOURMAP, alpha=0.6, vmin=0.0, vmax=max(top, 1e-12), interpolation="nearest")
        kind = "page" if cover is next(c for c in covers if c.page == cover.page) else "another view (thumbnail/crops)"
        axis.set_title(f"page {cover.page}: {kind}, {len(cover.tokens)} tokens", fontsize=8)
        axis.set_axis_off()
    figure.colorbar(image, ax=list(axes[0]), label="attention probability")
    hidden = [i for i in range(len(values)) if np.isnan(tiles[i]).any()]
    note = (f"{len(hidden)} tokens without page pixels, not painted (total mass {float(np.sum(values[hidden])):.3g}): "
            f"{', '.join(map(str, hidden[:12]))}{' ...' if len(hidden) > 12 else ''}" if hidden else "")
    figure.suptitle(title + (f"\n{note}" if note else ""), fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
