"""``hotpot``: HotpotQA dev (distractor setting), text only, EM/F1.

Context: the supporting paragraphs plus 1-5 random paragraphs, shuffled. As in the paper's code,
the random paragraphs are drawn from random questions of the whole dev set (not only from this
question's own distractors); paragraphs titled like a supporting one are not drawn again.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from ocr_heads.tasks.base import TEXT_QA_METRICS, Example, Passage, Task, passage_example
from ocr_heads.tasks.loaders import Row, load_json_rows

DEFAULT_SOURCE = "http://curtis.ml.cmu.edu/datasets/hotpot/hotpot_dev_distractor_v1.json"
LOCAL_DEFAULT = "hotpotqa/hotpot_dev_distractor_v1.json"
MIN_RANDOM, MAX_RANDOM = 1, 5


def load_rows(source: str) -> list[dict]:
    required = ("_id", "question", "answer", "supporting_facts", "context")
    return load_json_rows(source, LOCAL_DEFAULT, required=required)


def row_id(row: Row, index: int) -> str:
    return str(row["_id"])


def _paragraph(title: str, sentences: Sequence[str], is_evidence: bool) -> Passage:
    # Hotpot sentences keep their leading spaces, so joining with "" restores the paragraph.
    return Passage(title, "".join(sentences), is_evidence)


def supporting(row: Row) -> list[Passage]:
    titles = {title for title, _ in row["supporting_facts"]}
    seen: set[str] = set()
    found = []
    for title, sentences in row["context"]:
        if title in titles and title not in seen:
            seen.add(title)
            found.append(_paragraph(title, sentences, True))
    return found


def keep(row: Row) -> bool:
    return bool(supporting(row))


def random_paragraphs(rows: Sequence[Row], exclude: set[str], k: int, rng: random.Random) -> list[Passage]:
    """``k`` paragraphs from random rows, none titled like ``exclude`` or like each other."""
    chosen: list[Passage] = []
    titles = set(exclude)
    for _ in range(100 * k):  # bounded: a tiny pool may not hold k distinct titles
        if len(chosen) == k:
            break
        context = rows[rng.randrange(len(rows))]["context"]
        if not context:
            continue
        title, sentences = context[rng.randrange(len(context))]
        if title not in titles:
            titles.add(title)
            chosen.append(_paragraph(title, sentences, False))
    return chosen


def to_example(row: Row, index: int, rows: Sequence[Row], rng: random.Random) -> Example:
    evidence = supporting(row)
    k = rng.randint(MIN_RANDOM, MAX_RANDOM)
    distractors = random_paragraphs(rows, {p.title for p in evidence}, k, rng)
    return passage_example(row_id(row, index), row["question"], [str(row["answer"])], evidence, distractors, rng,
                           type=row.get("type"), level=row.get("level"))


TASK = Task("hotpot", "text", TEXT_QA_METRICS, DEFAULT_SOURCE, load_rows, row_id, to_example, keep=keep,
            local_default=LOCAL_DEFAULT,
            description=f"HotpotQA dev distractor: supporting + {MIN_RANDOM}-{MAX_RANDOM} random paragraphs, EM/F1")
