"""``nq``: Natural Questions dev as released by DPR (``biencoder-nq-dev.json``), text only, EM/F1.

Context: every positive passage whose title matches the answer's page (``title_score == 1``)
plus 5 random negative passages, shuffled. Questions with no such positive are passed over:
their context would not contain the answer.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from ocr_heads.tasks.base import TEXT_QA_METRICS, Example, Passage, Task, parse_answers, passage_example
from ocr_heads.tasks.loaders import Row, load_json_rows

DEFAULT_SOURCE = "https://dl.fbaipublicfiles.com/dpr/data/retriever/biencoder-nq-dev.json.gz"
LOCAL_DEFAULT = "nq/biencoder-nq-dev.json"
NUM_NEGATIVES = 5


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


def to_example(row: Row, index: int, rows: Sequence[Row], rng: random.Random) -> Example:
    negatives = row["negative_ctxs"]
    # The paper's code sampled from all but the last negative (an off-by-one); we use them all.
    chosen = rng.sample(negatives, min(NUM_NEGATIVES, len(negatives)))
    distractors = [Passage(ctx["title"], ctx["text"], False) for ctx in chosen]
    golds = parse_answers(row["answers"], where=f"nq {index}")
    return passage_example(row_id(row, index), row["question"], golds, evidence(row), distractors, rng)


TASK = Task("nq", "text", TEXT_QA_METRICS, DEFAULT_SOURCE, load_rows, row_id, to_example, keep=keep,
            local_default=LOCAL_DEFAULT,
            description=f"NQ dev (DPR): title-matched positives + {NUM_NEGATIVES} random negatives, EM/F1")
