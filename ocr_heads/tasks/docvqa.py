"""``doc``: DocVQA validation (lmms-lab/DocVQA, config DocVQA), one page per question, scored by ANLS."""

from __future__ import annotations

import random
from collections.abc import Sequence

from ocr_heads.tasks.base import Example, Row, Task, load_hf_rows, open_image, parse_answers

DEFAULT_SOURCE = "lmms-lab/DocVQA"
CONFIG = "DocVQA"
SPLIT = "validation"
# The short-answer instruction used by lmms-eval and by the paper's code for document QA.
INSTRUCTION = "Answer the question using a single word or phrase."


def load_rows(source: str) -> Sequence[Row]:
    required = ("questionId", "question", "answers", "image")
    return load_hf_rows(source, split=SPLIT, config=CONFIG, required=required)


def row_id(row: Row, index: int) -> str:
    return str(row["questionId"])


def pages(row: Row) -> list:
    return [open_image(row["image"], where=f"doc {row['questionId']}")]


def to_example(row: Row, index: int, rows: Sequence[Row], rng: random.Random) -> Example:
    example_id = row_id(row, index)
    return Example(
        id=example_id,
        question=row["question"],
        golds=parse_answers(row["answers"], where=f"doc {example_id}"),
        pages=pages(row),
        instruction=INSTRUCTION,
        meta={"doc_id": row.get("docId")},
    )


TASK = Task(
    name="doc",
    modality="image",
    metrics=("anls",),
    default_source=DEFAULT_SOURCE,
    local_default="DocVQA",
    load_rows=load_rows,
    row_id=row_id,
    to_example=to_example,
    description="DocVQA validation: one document page, short answer, ANLS",
)
