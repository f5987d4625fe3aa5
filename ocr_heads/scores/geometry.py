"""Character boxes -> the LLM image tokens that cover them."""

from __future__ import annotations

import numpy as np

# The paper's rule: a tile covers a character when their overlap exceeds 10% of the box area.
DEFAULT_OVERLAP = 0.1


def overlap_fraction(box: list[float] | np.ndarray, tiles: np.ndarray) -> np.ndarray:
    """Fraction of ``box``'s area inside each tile; ``tiles`` is (n, 4) of [x0, y0, x1, y1]."""
    x0, y0, x1, y1 = (float(v) for v in box)
    area = (x1 - x0) * (y1 - y0)
    if area <= 0:
        raise ValueError(f"zero-size evidence box {list(box)}")
    width = np.clip(np.minimum(x1, tiles[:, 2]) - np.maximum(x0, tiles[:, 0]), 0, None)
    height = np.clip(np.minimum(y1, tiles[:, 3]) - np.maximum(y0, tiles[:, 1]), 0, None)
    return width * height / area


def covering_tiles(box: list[float] | np.ndarray, tiles: np.ndarray, threshold: float = DEFAULT_OVERLAP) -> list[int]:
    """Indices of the tiles whose overlap with ``box`` exceeds ``threshold`` of the box area."""
    return np.flatnonzero(overlap_fraction(box, tiles) > threshold).tolist()


# The released code (utils/utils.py: compute_tile_weights, valuable_weights) keeps a tile when its
# overlap, in *percent* of the box area, exceeds 0.1: a fraction of 0.001, not the paper's 10%.
AUTHORS_OVERLAP = 0.001
# Their tile edge in resized-image pixels (Qwen2-VL 14 px patches merged 2x2; InternVL 448 px / 16).
AUTHORS_TILE_PX = 28


def authors_covering_tiles(box: list[float] | np.ndarray, tiles: np.ndarray,
                           threshold: float = AUTHORS_OVERLAP) -> list[int]:
    """The released overlap test: the box is scaled to the resized image and its corners truncated to
    int, then compared with 28 px tiles there; a tile is kept when the overlap exceeds ``threshold`` of
    the (integer) box area. A box that truncates to zero area covers nothing (as in their code).

    ``tiles`` are the token tiles in page pixels (one grid of equal tiles: a Qwen2-VL page, or an
    InternVL page as one 448 px tile); the resized image is the grid at 28 px a tile.
    """
    tiles = np.asarray(tiles, dtype=np.float64)
    widths, heights = tiles[:, 2] - tiles[:, 0], tiles[:, 3] - tiles[:, 1]
    if not (np.allclose(widths, widths[0]) and np.allclose(heights, heights[0])):
        raise ValueError("the authors' overlap rule needs one grid of equal tiles per page "
                         "(InternVL: one 448 px tile, no thumbnail)")
    page_w, page_h = round(float(tiles[:, 2].max())), round(float(tiles[:, 3].max()))
    cols, rows = np.rint(tiles[:, 0] / widths[0]).astype(int), np.rint(tiles[:, 1] / heights[0]).astype(int)
    # Their scale: resized size / page size, both in whole pixels.
    x_scale = (int(cols.max()) + 1) * AUTHORS_TILE_PX / page_w
    y_scale = (int(rows.max()) + 1) * AUTHORS_TILE_PX / page_h
    x0, y0, x1, y1 = (float(v) for v in box)
    x0, x1 = int(x0 * x_scale), int(x1 * x_scale)
    y0, y1 = int(y0 * y_scale), int(y1 * y_scale)
    area = (x1 - x0) * (y1 - y0)
    if area == 0:
        return []
    width = np.clip(np.minimum(x1, (cols + 1) * AUTHORS_TILE_PX) - np.maximum(x0, cols * AUTHORS_TILE_PX), 0, None)
    height = np.clip(np.minimum(y1, (rows + 1) * AUTHORS_TILE_PX) - np.maximum(y0, rows * AUTHORS_TILE_PX), 0, None)
    percent = width * height / area * 100
    return np.flatnonzero(percent > threshold * 100).tolist()
