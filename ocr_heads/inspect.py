"""How a model sees a page: its image tokens, their grid, and the page pixels each one covers.

    python -m ocr_heads.inspect --model_id Qwen/Qwen2-VL-2B-Instruct --image page_0.png --overlay grid.png

Loads the checkpoint's config, tokenizer and image processor only (no weights), builds the same
inputs step2 builds for that page under the chosen protocol, and prints the token count, the layout
and the tile boxes. ``--json`` ends stdout with one line
``{"image_tokens": N, "tiles": [[x0, y0, x1, y1], ...], "protocol": "paper"}``: one box per image
token in prompt order, in page pixels, or ``null`` for a token that shows no page pixels.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

from ocr_heads.core.commandline import Parser
from ocr_heads.core.errors import UserError
from ocr_heads.models import load_adapter, require_pages
from ocr_heads.models.options import adapter_kwargs, add_model_args

if TYPE_CHECKING:
    from ocr_heads.models import ModelAdapter

logger = logging.getLogger(__name__)

QUESTION = "What is the pass key?"
OVERLAY_COLOUR = (220, 30, 30)


@dataclass(frozen=True)
class PageView:
    image_tokens: int  # image-token ids in input_ids for this page
    tiles: np.ndarray  # (image_tokens, 4) page-pixel box of each token, prompt order
    layout: str
    page_size: tuple[int, int]


def view_page(adapter: ModelAdapter, page: Image.Image) -> PageView:
    """The adapter's view of one page, checked against the ids it actually puts in the prompt."""
    inputs = adapter.image_inputs([page], QUESTION)
    # A page may be several runs of image tokens (Gemma 3's pan-and-scan crops follow the whole page).
    tiles = np.concatenate([tokens.tile_boxes for tokens in inputs.image_tokens])
    in_prompt = int((inputs.input_ids == adapter.image_token_id).sum())
    if in_prompt != len(tiles):
        raise ValueError(f"{in_prompt} image-token ids in the prompt, but {len(tiles)} tile boxes")
    layout = "; ".join(tokens.layout for tokens in inputs.image_tokens if tokens.layout)
    return PageView(in_prompt, tiles, layout, page.size)


def draw_overlay(page: Image.Image, tiles: np.ndarray) -> Image.Image:
    """The page with every token's box outlined (boxes shared by several tokens are drawn once)."""
    canvas = page.convert("RGB")
    draw = ImageDraw.Draw(canvas)
    shown = tiles[~np.isnan(tiles).any(axis=1)]
    for x0, y0, x1, y1 in np.unique(np.round(shown, 2), axis=0):
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=OVERLAY_COLOUR)
    return canvas


def json_line(view: PageView, protocol: str) -> str:
    """``null`` for a token that shows no page pixels (a LLaVA-OneVision row newline)."""
    tiles = [None if np.isnan(box).any() else box.tolist() for box in view.tiles]
    return json.dumps({"image_tokens": view.image_tokens, "tiles": tiles, "protocol": protocol})


def report(adapter: ModelAdapter, view: PageView) -> str:
    settings = ", ".join(f"{k}={v}" for k, v in adapter.settings().items())
    lines = [f"model: {adapter.name}", f"settings: {settings}", f"page: {view.page_size[0]}x{view.page_size[1]} px",
             f"image tokens: {view.image_tokens}", f"grid: {view.layout}", "tiles (token: x0 y0 x1 y1, page px):"]
    lines += [f"  {i:4d}: no page pixels" if np.isnan(box).any() else
              f"  {i:4d}: {box[0]:8.2f} {box[1]:8.2f} {box[2]:8.2f} {box[3]:8.2f}" for i, box in enumerate(view.tiles)]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        description="Show how a model turns one page into image tokens: token count, grid and the page-pixel box "
        "of every token, under the chosen protocol. Reads only config, tokenizer and image processor.",
        epilog='With --json the last stdout line is {"image_tokens": N, "tiles": [[x0, y0, x1, y1], ...], '
        '"protocol": NAME}. --overlay writes the page with the token grid drawn on it.',
    )
    add_model_args(parser)
    parser.add_argument("--image", required=True, type=Path, help="page image (PNG, JPEG, ...)")
    parser.add_argument("--overlay", type=Path, default=None, help="write the page with the token grid to this PNG")
    parser.add_argument("--json", action="store_true", help="end stdout with one JSON line (see below)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if not args.image.is_file():
            raise FileNotFoundError(f"no image at {args.image}")
        page = Image.open(args.image)
        page.load()
        require_pages(args.model_id, "inspect")
        adapter = load_adapter(args.model_id, weights=False, **adapter_kwargs(args))
        view = view_page(adapter, page)
        if args.overlay is not None:
            draw_overlay(page, view.tiles).save(args.overlay)
    except (OSError, ValueError, UserError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(report(adapter, view))
    if args.overlay is not None:
        print(f"overlay: {args.overlay}")
    if args.json:
        print(json_line(view, adapter.protocol))
    return 0


if __name__ == "__main__":
    sys.exit(main())
