"""Tile-exact passkey pages for the toy model, written as ordinary step1 records.

A page is a grid of ``cols x rows`` cells of exactly 28x28 px, one character per cell, drawn in
DejaVu Sans Mono (the step1 font). 28 px is one Qwen2-VL LLM token (patch 14, spatial merge 2), and
a page of at most 256 cells is not resized by the image processor, so reading a character is
classifying one vision token and the OCR target of each key digit is exactly one tile. Line
wrapping, needle insertion and the record format are step1's own (:mod:`ocr_heads.data`), so
step2, step3 and the experiments read these samples unchanged.

    python -m ocr_heads.toy.data --out results/demo/data/passkey --n 40 --seed 1000
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from ocr_heads.core.commandline import Parser, count_help, positive_int, run_cli, setup_logging
from ocr_heads.core.io import append_jsonl, read_jsonl
from ocr_heads.data.haystack import Needle, embedded_corpus, haystack_slice, insert_needle
from ocr_heads.data.render import CharBox, PageLayout, PageStyle, load_font
from ocr_heads.data.samples import SAMPLES_FILE, evidence_boxes, find_answer_spans
from ocr_heads.models.protocol import NATIVE

logger = logging.getLogger(__name__)

# The toy was trained at its saved processor bounds (min 4*28*28, max 256*28*28 pixels), which keep its
# 448x168 pages at 16 x 6 tokens, one character each. The paper's budget (min = max = 256*28*28) would
# upscale them to 10 x 27 tokens, a geometry the toy never saw: load it with the native protocol.
TOY_PROTOCOL = NATIVE

TILE = 28  # px of one LLM image token on the resized image (Qwen2-VL: patch 14 x merge 2)
QUESTION = "What is the pass key?"
# The prompts the pipeline sends: step2 asks the bare question; the passkey tasks of exp_masking add
# an instruction (and, after a text context, a "Question:" label). Training sees all of them.
QUESTION_VARIANTS = (
    QUESTION,
    f"{QUESTION}\nReply with the answer only.",
    f"Question: {QUESTION}\nReply with the answer only.",
)


@dataclass(frozen=True)
class TileStyle:
    cols: int = 16
    rows: int = 6
    tile: int = TILE
    font_size: int = 22
    key_digits: int = 5

    @property
    def page_size(self) -> tuple[int, int]:
        return self.cols * self.tile, self.rows * self.tile

    @property
    def font(self) -> ImageFont.FreeTypeFont:
        return load_font(self.font_size)


class TileLayout(PageLayout):
    """step1's layout (same wrapping, pages, offsets) with every character centred in its own tile."""

    def __init__(self, text: str, style: TileStyle) -> None:
        super().__init__(text, PageStyle(chars_per_line=style.cols, lines_per_page=style.rows))
        self.tiles = style

    def char_box(self, offset: int) -> CharBox:
        page, row, col = self.locate(offset)
        t = self.tiles.tile
        return CharBox(page, (col * t, row * t, (col + 1) * t, (row + 1) * t))

    def tile_chars(self, page: int) -> list[str]:
        """The character drawn in each tile of ``page``, row-major (a space where nothing is drawn)."""
        cells = [" "] * (self.tiles.cols * self.tiles.rows)
        for row, (start, end) in enumerate(self.page_lines(page)):
            for col, char in enumerate(self.text[start:end]):
                cells[row * self.tiles.cols + col] = char
        return cells

    def render_page(self, page: int) -> Image.Image:
        image = Image.new("L", self.tiles.page_size, color=255)
        draw = ImageDraw.Draw(image)
        t, font = self.tiles.tile, self.tiles.font
        for index, char in enumerate(self.tile_chars(page)):
            if char != " ":
                row, col = divmod(index, self.tiles.cols)
                # "mm" anchors on the middle of ascender/descender: one baseline for every glyph.
                draw.text((col * t + t / 2, row * t + t / 2), char, font=font, fill=0, anchor="mm")
        return image.convert("RGB")


@dataclass
class ToySample:
    context: str
    needle: Needle
    needle_span: tuple[int, int]
    layout: TileLayout

    @property
    def answer(self) -> str:
        return self.needle.answer


def passkey(rng: random.Random, digits: int) -> str:
    return str(rng.randint(1, 9)) + "".join(rng.choice("0123456789") for _ in range(digits - 1))


@lru_cache(maxsize=1)
def _corpus() -> str:
    return embedded_corpus()


def make_sample(rng: random.Random, style: TileStyle | None = None) -> ToySample:
    """One page: a haystack window with "The pass key is NNNNN." at a random sentence boundary."""
    style = style or TileStyle()
    key = passkey(rng, style.key_digits)
    needle = Needle(text=f"The pass key is {key}.", question=QUESTION, answer=key)
    capacity = style.cols * style.rows
    # Half-full to almost full pages, so the needle line and the key's tiles move around the page.
    budget = rng.randint(capacity // 3, capacity - len(needle.text))
    haystack = haystack_slice(_corpus(), budget, rng)
    depth = rng.random()
    while True:
        context, start = insert_needle(haystack, needle.text, depth)
        layout = TileLayout(context, style)
        if layout.num_pages == 1 and len(context) <= capacity:
            return ToySample(context, needle, (start, start + len(needle.text)), layout)
        # Word wrapping left too little room: drop the haystack's last word and lay out again.
        haystack = haystack.rsplit(" ", 1)[0] if " " in haystack else ""


def sample_rng(seed: int, split: str, index: int) -> random.Random:
    # String seeds are hashed (SHA-512) by `random`: one stream per (seed, split, index), on any machine.
    return random.Random(f"toy:{seed}:{split}:{index}")


def record(sample_id: str, sample: ToySample, out_dir: Path, extra: dict | None = None) -> dict:
    """Render the page under ``out_dir/sample_id/`` and return the step1 record."""
    page_dir = out_dir / sample_id
    page_dir.mkdir(parents=True, exist_ok=True)
    pages = []
    for index, image in enumerate(sample.layout.render()):
        image.save(page_dir / f"page_{index}.png")
        pages.append(f"{sample_id}/page_{index}.png")
    spans = find_answer_spans(sample.context, sample.answer, sample.needle_span)
    occurrences = [{"span": list(span), "evidence": evidence_boxes(sample.layout, span)} for span in spans]
    return {
        "id": sample_id,
        "question": sample.needle.question,
        "answer": sample.answer,
        "context": sample.context,
        "pages": pages,
        "evidence": occurrences[0]["evidence"],
        "occurrences": occurrences,
        "needle": sample.needle.text,
        "needle_span": list(sample.needle_span),
        **(extra or {}),
    }


def write_samples(out_dir: str | Path, n: int, seed: int, split: str = "heldout",
                  style: TileStyle | None = None) -> Path:
    """Write ``n`` samples to ``out_dir/samples.jsonl`` (step1 format); a rerun keeps finished ones."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / SAMPLES_FILE
    done = {r["id"] for r in read_jsonl(path)}
    for i in tqdm(range(n), desc="toy step1", unit="sample"):
        sample_id = f"toy_{split}_{seed}_{i:04d}"
        if sample_id in done:
            continue
        sample = make_sample(sample_rng(seed, split, i), style)
        append_jsonl(path, record(sample_id, sample, out_dir, {"task": "toy_passkey", "seed": seed, "source": "toy"}))
    logger.info("%d toy samples in %s", n, path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = Parser(
        description="Step 1 for the toy model: passkey pages with one character per 28x28 tile.",
        epilog=f"Writes OUT/{SAMPLES_FILE} (step1 records: id, question, answer, context, pages, evidence, "
        "occurrences, needle_span) and OUT/<id>/page_0.png. Training draws from split 'train'; use any other "
        "split (default heldout) for evaluation.",
    )
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--n", type=positive_int, default=50, help=count_help("in total", 50))
    parser.add_argument("--seed", type=int, default=1000, help="sample seed (default 1000)")
    parser.add_argument("--split", default="heldout", help="stream name (default heldout; training uses 'train')")
    args = parser.parse_args(argv)
    setup_logging()
    return run_cli(lambda: write_samples(args.out, args.n, args.seed, args.split) and 0)


if __name__ == "__main__":
    raise SystemExit(main())
