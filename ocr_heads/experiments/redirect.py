"""exp_redirect's rules, torch-free: which character a redirect points to, the blank control region, how an output
character is classified, and the rates a CSV row holds. The model loop is :mod:`ocr_heads.pipeline.redirect`.

The event: on a passkey page, the model is about to write answer character ``i`` (teacher-forced: the prompt plus
the gold answer's first ``i`` characters, one forward); the top-k OCR heads' producing row moves a share ``alpha``
of its attention on character ``i``'s tiles onto the tiles of another character ``j`` of the same answer (the next
one, cyclically, whose character differs from ``i``'s). The output character is *steered* when it becomes ``j``'s,
*kept* when it stays ``i``'s, *other* otherwise. Controls: k random heads (per seed) redirected the same way, and
the top-k heads redirected to a *blank* region (as many ink-free tiles of the page as ``j`` has, the ones nearest
to ``j``'s tiles). Only events the unedited model gets right count (a model that misreads ``i`` unedited says
nothing about steering).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

HEAD_SETS = ("top", "random", "blank")
OUTCOMES = ("steered", "kept", "other")
CSV_COLUMNS = ["model", "head_set", "k", "alpha", "seed", "n", *OUTCOMES, "note"]
# A tile is blank when every pixel under it is at least this bright (0 black .. 255 white).
BLANK_LEVEL = 250


def partner(answer: str, i: int, usable: Sequence[bool]) -> int | None:
    """The character ``j`` that ``i`` is redirected to: the next position after ``i`` (cyclically) whose character
    differs from ``answer[i]`` and whose tiles are known; None if there is none."""
    for step in range(1, len(answer)):
        j = (i + step) % len(answer)
        if usable[j] and answer[j] != answer[i]:
            return j
    return None


def blank_tiles(page: np.ndarray, tile_boxes: np.ndarray, near: Sequence[int], count: int) -> list[int]:
    """``count`` indices of ink-free tiles (every pixel >= BLANK_LEVEL in the grey ``page``), nearest to the tiles
    ``near`` (by centre distance; ties by index). Fewer when the page has fewer blank tiles."""
    height, width = page.shape
    blank = []
    for index, (x0, y0, x1, y1) in enumerate(tile_boxes):
        if np.isnan(x0):
            continue
        region = page[max(int(y0), 0) : min(int(np.ceil(y1)), height), max(int(x0), 0) : min(int(np.ceil(x1)), width)]
        if region.size and region.min() >= BLANK_LEVEL:
            blank.append(index)
    if not blank or not near:
        return blank[:count]
    centres = (tile_boxes[:, :2] + tile_boxes[:, 2:]) / 2
    anchor = centres[list(near)].mean(axis=0)
    distance = np.linalg.norm(centres[blank] - anchor, axis=1)
    order = sorted(range(len(blank)), key=lambda n: (distance[n], blank[n]))
    return sorted(blank[n] for n in order[:count])


def outcome(text: str, kept: str, steered: str) -> str:
    """The class of the character the model wrote (its first non-space character)."""
    written = text.strip()[:1]
    if written == steered:
        return "steered"
    if written == kept:
        return "kept"
    return "other"


def rates(outcomes: Sequence[str]) -> dict[str, float]:
    """Fractions of each outcome (they sum to 1); all 0 when there is no event."""
    n = len(outcomes)
    return {name: (sum(o == name for o in outcomes) / n if n else 0.0) for name in OUTCOMES}
