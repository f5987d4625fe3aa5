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
