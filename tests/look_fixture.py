"""A synthetic look folder (what ``python -m ocr_heads.look`` writes) with known attention, for the viewer's tests.

Two pages tiled by 20-pixel boxes (page 0: 4 x 2 tiles, page 1: 3 x 2) and one image token with no pixels.
At step s every head puts all its mass on tile ``TARGETS[s]``, except head l1_h2, which looks one tile further.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from safetensors.numpy import save_file

TILE = 20
PAGE_SIZES = [(80, 40), (60, 40)]
STEPS, LAYERS, HEADS = 4, 2, 3
TARGETS = [0, 9, 3, 13]  # step 1 looks at page 1; step 3 at the last pixel tile (its neighbour has no pixels)
ODD_HEAD = (1, 2)
PIECES = ["4", "8", "2", " end"]
SCORES = {"ocr": {"l1_h2": 0.9, "l0_h0": 0.4, "l0_h1": 0.1}}


def tiles_and_pages() -> tuple[list[list[int] | None], list[int]]:
    tiles: list[list[int] | None] = []
    pages: list[int] = []
    for page, (width, height) in enumerate(PAGE_SIZES):
        for y in range(0, height, TILE):
            for x in range(0, width, TILE):
                tiles.append([x, y, x + TILE, y + TILE])
                pages.append(page)
    tiles.append(None)  # e.g. a row-newline token
    pages.append(1)
    return tiles, pages


def attention() -> np.ndarray:
    tokens = len(tiles_and_pages()[0])
    values = np.zeros((STEPS, LAYERS, HEADS, tokens), dtype=np.float16)
    for step, target in enumerate(TARGETS):
        values[step, :, :, target] = 1.0
        values[step, ODD_HEAD[0], ODD_HEAD[1], target] = 0.0
        values[step, ODD_HEAD[0], ODD_HEAD[1], target + 1] = 1.0
    return values


def write_page(path: Path, size: tuple[int, int], page: int) -> None:
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    for x in range(4, size[0] - 8, 12):
        draw.rectangle([x, 8 + 4 * page, x + 6, 28], fill="black")  # glyph-like marks
    image.save(path)


def make_look_dir(out_dir: Path, question: str = "What is the pass key?") -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    tiles, pages = tiles_and_pages()
    for page, size in enumerate(PAGE_SIZES):
        write_page(out_dir / f"page_{page}.png", size, page)
    save_file({"image_attention": attention()}, str(out_dir / "attention.safetensors"))
    look = {"model": "synthetic", "protocol": "paper", "question": question, "answer": "482",
            "pieces": PIECES, "tiles": tiles, "pages": pages,
            "page_files": [f"page_{page}.png" for page in range(len(PAGE_SIZES))],
            "page_sizes": [list(size) for size in PAGE_SIZES], "layers": LAYERS, "heads": HEADS, "scores": SCORES}
    (out_dir / "look.json").write_text(json.dumps(look, indent=1))
    return out_dir
