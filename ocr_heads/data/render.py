"""Render text to page images and know the pixel box of every character.

Text is laid out by :func:`layout_text` (50 characters a line, 15 lines a page by default) and
drawn in a monospace TrueType font shipped with matplotlib (DejaVu Sans Mono), so the result does
not depend on the fonts a machine happens to have (another font, e.g. the authors' Arial metrics, is a
:class:`PageStyle` ``font_path``: :mod:`ocr_heads.data.fonts`). Every character of the text owns one cell on
exactly one page, including the space at a line break (kept at the end of its line), so any
character offset of the context maps to a box.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ocr_heads.data.fonts import DEFAULT_FONT

CHARS_PER_LINE = 50
LINES_PER_PAGE = 15
FONT_SIZE = 20
MARGIN = 16
LINE_GAP = 6


@lru_cache(maxsize=8)
def load_font(size: int = FONT_SIZE, path: Path | None = None) -> ImageFont.FreeTypeFont:
    """The page font at ``size``: ``path`` (a TrueType/OpenType file), or DejaVu Sans Mono by default."""
    return ImageFont.truetype(str(path or DEFAULT_FONT), size)


@dataclass(frozen=True)
class PageStyle:
    chars_per_line: int = CHARS_PER_LINE
    lines_per_page: int = LINES_PER_PAGE
    font_size: int = FONT_SIZE
    margin: int = MARGIN
    line_gap: int = LINE_GAP
    font_path: Path | None = None  # None: DejaVu Sans Mono (ocr_heads.data.fonts)

    @property
    def font(self) -> ImageFont.FreeTypeFont:
        return load_font(self.font_size, self.font_path)

    @property
    def text_height(self) -> int:
        ascent, descent = self.font.getmetrics()
        return ascent + descent

    @property
    def line_height(self) -> int:
        return self.text_height + self.line_gap

    @property
    def page_size(self) -> tuple[int, int]:
        width = 2 * self.margin + int(round(self.font.getlength("M" * self.chars_per_line))) + 1
        height = 2 * self.margin + self.lines_per_page * self.line_height
        return width, height


def layout_text(text: str, chars_per_line: int = CHARS_PER_LINE) -> list[tuple[int, int]]:
    """Greedy word wrap; returns ``(start, end)`` offsets of each line in ``text``.

    Lines cover ``text`` exactly and in order (no character is dropped): the space where a line
    breaks stays at the end of that line. A word longer than a line is split. Newlines are not
    expected (callers normalise whitespace first).
    """
    if "\n" in text:
        raise ValueError("layout_text expects single-line text; normalise whitespace first")
    lines: list[tuple[int, int]] = []
    start = 0
    while start < len(text):
        end = min(start + chars_per_line, len(text))
        if end < len(text) and text[end] != " ":
            # Break after the last space inside the window, if the line has one.
            space = text.rfind(" ", start, end)
            if space >= start:
                end = space + 1
        lines.append((start, end))
        start = end
    return lines


@dataclass(frozen=True)
class CharBox:
    page: int
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in page pixels, x1/y1 exclusive


class PageLayout:
    """Where each character of a text sits: page, line, column and pixel box."""

    def __init__(self, text: str, style: PageStyle | None = None) -> None:
        self.text = text
        self.style = style or PageStyle()
        self.lines = layout_text(text, self.style.chars_per_line)

    @property
    def num_pages(self) -> int:
        return max(1, -(-len(self.lines) // self.style.lines_per_page))

    def page_lines(self, page: int) -> list[tuple[int, int]]:
        per_page = self.style.lines_per_page
        return self.lines[page * per_page : (page + 1) * per_page]

    def locate(self, offset: int) -> tuple[int, int, int]:
        """Character offset -> (page, row on page, column)."""
        if not 0 <= offset < len(self.text):
            raise IndexError(f"offset {offset} outside the text (length {len(self.text)})")
        for index, (start, end) in enumerate(self.lines):
            if start <= offset < end:
                return index // self.style.lines_per_page, index % self.style.lines_per_page, offset - start
        raise AssertionError("layout does not cover the text")  # unreachable: lines cover the text

    def char_box(self, offset: int) -> CharBox:
        page, row, col = self.locate(offset)
        style = self.style
        line_start = self.lines[page * style.lines_per_page + row][0]
        prefix = self.text[line_start : line_start + col]
        x0 = style.margin + style.font.getlength(prefix)
        x1 = style.margin + style.font.getlength(prefix + self.text[offset])
        y0 = style.margin + row * style.line_height
        # Adjacent boxes share an edge (x1 is exclusive), so no pixel column belongs to two characters.
        return CharBox(page, (round(x0), y0, round(x1), y0 + style.text_height))

    def render_page(self, page: int) -> Image.Image:
        style = self.style
        image = Image.new("L", style.page_size, color=255)
        draw = ImageDraw.Draw(image)
        for row, (start, end) in enumerate(self.page_lines(page)):
            draw.text((style.margin, style.margin + row * style.line_height), self.text[start:end],
                      font=style.font, fill=0)
        return image.convert("RGB")

    def render(self) -> list[Image.Image]:
        return [self.render_page(page) for page in range(self.num_pages)]
