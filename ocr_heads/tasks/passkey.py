"""``passkey`` / ``passkey_text``: the project's own step1 samples, as page images or as plain text.

Source: a step1 output directory holding ``samples.jsonl`` (records ``{id, question, answer,
context, pages: [paths relative to the directory], evidence}``). Scored by accuracy (the key
appears in the answer) and EM.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ocr_heads.core.io import read_jsonl
from ocr_heads.tasks.base import Example, Task
from ocr_heads.tasks.loaders import Row, open_image

SAMPLES_FILE = "samples.jsonl"
REQUIRED_FIELDS = ("id", "question", "answer", "context", "pages", "evidence")
INSTRUCTION = "Reply with the answer only."


def load_rows(source: str) -> list[dict]:
    data_dir = Path(source).expanduser()
    path = data_dir / SAMPLES_FILE if data_dir.is_dir() else data_dir
    if not path.is_file():
        raise FileNotFoundError(f"no step1 output at {path} (run step1_passkey.py; pass its --out directory)")
    rows = []
    for number, record in enumerate(read_jsonl(path), start=1):
        missing = [key for key in REQUIRED_FIELDS if key not in record]
        if missing:
            raise ValueError(f"{path}:{number}: record lacks {missing}; is this step1 output?")
        rows.append({**record, "_dir": str(path.parent)})
    if not rows:
        raise ValueError(f"{path} holds no samples")
    return rows


def row_id(row: Row, index: int) -> str:
    return str(row["id"])


def pages(row: Row) -> list:
    if not row["pages"]:
        raise ValueError(f"passkey {row['id']}: record lists no pages")
    return [open_image(Path(row["_dir"]) / page, where=f"passkey {row['id']}") for page in row["pages"]]


def _example(row: Row, index: int, **fields: Any) -> Example:
    return Example(id=row_id(row, index), question=row["question"], golds=[str(row["answer"])],
                   instruction=INSTRUCTION, **fields)


def to_image_example(row: Row, index: int, rows: Sequence[Row], rng: random.Random) -> Example:
    return _example(row, index, pages=pages(row), meta={"evidence": row["evidence"], "page_files": list(row["pages"])})


def to_text_example(row: Row, index: int, rows: Sequence[Row], rng: random.Random) -> Example:
    return _example(row, index, context=row["context"])


METRICS = ("accuracy", "em")
TASK = Task("passkey", "image", METRICS, None, load_rows, row_id, to_image_example,
            description="step1 passkey samples as rendered pages; accuracy and EM")
TEXT_TASK = Task("passkey_text", "text", METRICS, None, load_rows, row_id, to_text_example,
                 description="step1 passkey samples as plain text (the context the pages show); accuracy and EM")
