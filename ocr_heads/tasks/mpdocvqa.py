"""``mdocs``: MP-DocVQA val (lmms-lab/MP-DocVQA), documents of at most 8 pages, scored by ANLS.

Rows hold their pages in columns ``image_1`` ... ``image_20`` (None past the last page) and the
answers as a Python list literal in a string; ``answer_page_idx`` is the 0-based evidence page.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from ocr_heads.tasks.base import Example, Task
from ocr_heads.tasks.docvqa import document_example, row_id
from ocr_heads.tasks.loaders import Row, load_hf_rows, open_image

DEFAULT_SOURCE = "lmms-lab/MP-DocVQA"
SPLIT = "val"
MAX_PAGES = 8  # the paper keeps documents that fit the model's context: <= 8 pages

_PAGE_COLUMN = re.compile(r"^image_(\d+)$")


def page_columns(row: Row) -> list[str]:
    """The row's page columns in page order, skipping empty ones."""
    numbered = sorted((int(m.group(1)), key) for key in row if (m := _PAGE_COLUMN.match(key)))
    return [key for _, key in numbered if row[key] is not None]


def keep(row: Row) -> bool:
    return 0 < len(page_columns(row)) <= MAX_PAGES


def load_rows(source: str) -> Sequence[Row]:
    return load_hf_rows(source, split=SPLIT, required=("questionId", "question", "answers", "image_1"))


def pages(row: Row) -> list:
    return [open_image(row[key], where=f"mdocs {row['questionId']} {key}") for key in page_columns(row)]


def to_example(row: Row, index: int, rows: Sequence[Row], rng: random.Random) -> Example:
    return document_example("mdocs", row, pages(row), doc_id=row.get("doc_id"),
                            answer_page_idx=row.get("answer_page_idx"))


TASK = Task("mdocs", "image", ("anls",), DEFAULT_SOURCE, load_rows, row_id, to_example, keep=keep,
            local_default="MP-DocVQA", description=f"MP-DocVQA val, documents of at most {MAX_PAGES} pages, ANLS")
