"""``nq``: Natural Questions dev as released by DPR (``biencoder-nq-dev.json``), text only, EM/F1.

Context: every positive passage whose title matches the answer's page (``title_score == 1``)
plus 5 random negative passages, shuffled. Questions with no such positive are passed over:
their context would not contain the answer.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from ocr_heads.tasks.base import (
    TEXT_QA_INSTRUCTION,
    Example,
    Passage,
    Row,
    Task,
    format_passages,
    load_json_rows,
    parse_answers,
    passages_meta,
)

DEFAULT_SOURCE = "https://dl.fbaipublicfiles.com/dpr/data/retriever/biencoder-nq-dev.json.gz"
LOCAL_DEFAULT = "nq/biencoder-nq-dev.json"
NUM_NEGATIVES = 5
INSTRUCTION = TEXT_QA_INSTRUCTION


def load_rows(source: str) -> list[dict]:
    required = ("question", "answers", "positive_ctxs", "negative_ctxs")
    return load_json_rows(source, LOCAL_DEFAULT, required=required)


def row_id(row: Row, index: int) -> str:
    return str(index)  # DPR records carry no id; the position in the dev file is stable


def evidence(row: Row) -> list[Passage]:
    return [
        Passage(ctx["title"], ctx["text"], True)
        for ctx in row["positive_ctxs"]
        if ctx.get("title_score") == 1
    ]


def keep(row: Row) -> bool:
    return bool(evidence(row))


def passages(row: Row, rng: random.Random) -> list[Passage]:
    negatives = row["negative_ctxs"]
    # The paper's code sampled from all but the last negative (an off-by-one); we use them all.
    chosen = rng.sample(negatives, min(NUM_NEGATIVES, len(negatives)))
    mixed = evidence(row) + [Passage(ctx["title"], ctx["text"], False) for ctx in chosen]
    rng.shuffle(mixed)
    return mixed


def to_example(row: Row, index: int, rows: Sequence[Row], rng: random.Random) -> Example:
    mixed = passages(row, rng)
    return Example(
        id=row_id(row, index),
        question=row["question"],
        golds=parse_answers(row["answers"], where=f"nq {index}"),
        context=format_passages(mixed),
        instruction=INSTRUCTION,
        meta=passages_meta(mixed),
    )


TASK = Task(
    name="nq",
    modality="text",
    metrics=("em", "f1"),
    default_source=DEFAULT_SOURCE,
    local_default=LOCAL_DEFAULT,
    load_rows=load_rows,
    row_id=row_id,
    to_example=to_example,
    keep=keep,
    description=f"NQ dev (DPR): title-matched positives + {NUM_NEGATIVES} random negatives, EM/F1",
)
