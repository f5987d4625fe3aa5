"""``doc``: DocVQA validation (lmms-lab/DocVQA, config DocVQA), one page per question, scored by ANLS."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from PIL import Image

from ocr_heads.tasks.base import Example, Task, parse_answers
from ocr_heads.tasks.loaders import Row, load_hf_rows, open_image

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


def document_example(task: str, row: Row, pages: list[Image.Image], **meta: Any) -> Example:
    """The Example of a DocVQA-style row (``questionId``, ``question``, ``answers``; MP-DocVQA's too)."""
    example_id = str(row["questionId"])
    golds = parse_answers(row["answers"], where=f"{task} {example_id}")
    return Example(id=example_id, question=row["question"], golds=golds, pages=pages, instruction=INSTRUCTION,
                   meta=meta)


def to_example(row: Row, index: int, rows: Sequence[Row], rng: random.Random) -> Example:
    return document_example("doc", row, pages(row), doc_id=row.get("docId"))


TASK = Task("doc", "image", ("anls",), DEFAULT_SOURCE, load_rows, row_id, to_example, local_default="DocVQA",
            description="DocVQA validation: one document page, short answer, ANLS")
