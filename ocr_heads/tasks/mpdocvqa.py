"""``mdocs``: MP-DocVQA val (lmms-lab/MP-DocVQA), documents of at most 8 pages, scored by ANLS.

Rows hold their pages in columns ``image_1`` ... ``image_20`` (None past the last page) and the
answers as a Python list literal in a string; ``answer_page_idx`` is the 0-based evidence page.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from ocr_heads.tasks.base import Example, Row, Task, load_hf_rows, open_image, parse_answers

DEFAULT_SOURCE = "lmms-lab/MP-DocVQA"
SPLIT = "val"
MAX_PAGES = 8  # the paper keeps documents that fit the model's context: <= 8 pages
INSTRUCTION = "Answer the question using a single word or phrase."

_PAGE_COLUMN = re.compile(r"^image_(\d+)$")


def page_columns(row: Row) -> list[str]:
    """The row's page columns in page order, skipping empty ones."""
    numbered = sorted((int(m.group(1)), key) for key in row if (m := _PAGE_COLUMN.match(key)))
    return [key for _, key in numbered if row[key] is not None]


def keep(row: Row) -> bool:
    return 0 < len(page_columns(row)) <= MAX_PAGES


def load_rows(source: str) -> Sequence[Row]:
    return load_hf_rows(source, split=SPLIT, required=("questionId", "question", "answers", "image_1"))


def row_id(row: Row, index: int) -> str:
    return str(row["questionId"])


def pages(row: Row) -> list:
    return [open_image(row[key], where=f"mdocs {row['questionId']} {key}") for key in page_columns(row)]


def to_example(row: Row, index: int, rows: Sequence[Row], rng: random.Random) -> Example:
    example_id = row_id(row, index)
    return Example(
        id=example_id,
        question=row["question"],
        golds=parse_answers(row["answers"], where=f"mdocs {example_id}"),
        pages=pages(row),
        instruction=INSTRUCTION,
        meta={"doc_id": row.get("doc_id"), "answer_page_idx": row.get("answer_page_idx")},
    )


TASK = Task(
    name="mdocs",
    modality="image",
    metrics=("anls",),
    default_source=DEFAULT_SOURCE,
    local_default="MP-DocVQA",
    load_rows=load_rows,
    row_id=row_id,
    to_example=to_example,
    keep=keep,
    description=f"MP-DocVQA val, documents of at most {MAX_PAGES} pages, ANLS",
)
