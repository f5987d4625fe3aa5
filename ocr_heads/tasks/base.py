"""What every evaluation task shares: the Example it yields, the Task record, answers and passages.

A task (one module per dataset, shaped like an lmms-eval task) says how to load its rows (with the
loaders of :mod:`ocr_heads.tasks.loaders`), how to turn one row into an ``Example`` (pages and/or
context, question, golds) and which metrics score it. The model adapter turns ``example.pages`` +
``example.prompt`` into model inputs; tasks never see a model.
"""

from __future__ import annotations

import ast
import logging
import os
import random
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from PIL import Image

from ocr_heads.tasks.loaders import Row, local_copy
from ocr_heads.tasks.metrics import METRICS, score_all

logger = logging.getLogger(__name__)

DEFAULT_N = 600
# Shared by the text QA tasks (nq, hotpot): a short, extractive answer.
TEXT_QA_INSTRUCTION = (
    "Answer the question from the evidence above. Reply with only the answer, a word or short phrase."
)
TEXT_QA_METRICS = ("em", "f1")


@dataclass
class Example:
    """One evaluation item, model-agnostic.

    ``question`` is the dataset's question; ``instruction`` the task's answer-format line;
    ``context`` the text the answer must be read from (text tasks); ``pages`` the images (image
    tasks, RGB, in reading order). ``prompt`` is the whole text turn the model gets after the
    pages: it already contains ``context``, so an adapter needs only ``pages`` and ``prompt``.
    ``meta`` holds what analysis may want (evidence page, passage titles, ...).
    """

    id: str
    question: str
    golds: list[str]
    pages: list[Image.Image] | None = None
    context: str | None = None
    instruction: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.golds or not all(isinstance(gold, str) for gold in self.golds):
            raise ValueError(f"example {self.id}: golds must be a non-empty list of strings: {self.golds!r}")
        if self.pages is not None and not self.pages:
            raise ValueError(f"example {self.id}: pages is an empty list (use None for a text-only example)")

    @property
    def prompt(self) -> str:
        # Image tasks: "{question}\n{instruction}", the usual DocVQA prompt for these models;
        # after a long text context the question gets a label so it stands apart from the evidence.
        question = f"Question: {self.question}" if self.context else self.question
        if self.instruction:
            question = f"{question}\n{self.instruction}"
        return f"{self.context}\n\n{question}" if self.context else question

    @property
    def num_pages(self) -> int:
        return len(self.pages) if self.pages else 0


@dataclass(frozen=True)
class Task:
    """A dataset as the experiments see it: rows in, Examples out, metrics by name.

    ``load_rows(source)`` returns an indexable sequence of rows; ``row_id(row, index)`` a stable id;
    ``keep(row)`` filters rows that cannot be used (they do not count towards ``n``);
    ``to_example(row, index, rows, rng)`` builds the Example (``rows`` for tasks that draw
    distractors from other rows, ``rng`` seeded per example).
    """

    name: str
    modality: Literal["image", "text"]
    metrics: tuple[str, ...]
    default_source: str | None
    load_rows: Callable[[str], Sequence[Row]]
    row_id: Callable[[Row, int], str]
    to_example: Callable[[Row, int, Sequence[Row], random.Random], Example]
    keep: Callable[[Row], bool] | None = None
    local_default: str | None = None  # path under dataset/ that download.sh fills
    description: str = ""

    def __post_init__(self) -> None:
        unknown = [name for name in self.metrics if name not in METRICS]
        if unknown:
            raise ValueError(f"task {self.name}: unknown metrics {unknown}")

    def resolve_source(self, source: str | os.PathLike | None = None) -> str:
        """The explicit source, else the local copy under dataset/, else the hub id / URL."""
        if source is not None:
            return str(source)
        local = local_copy(self.local_default)
        if local is not None:
            return str(local)
        if self.default_source is None:
            raise ValueError(f"task {self.name} has no default source: pass one (see --help)")
        return self.default_source

    def rows(self, source: str | os.PathLike | None = None) -> Sequence[Row]:
        return self.load_rows(self.resolve_source(source))

    def examples(
        self,
        source: str | os.PathLike | None = None,
        n: int | None = DEFAULT_N,
        seed: int = 0,
        skip_ids: Collection[str] = (),
    ) -> Iterator[Example]:
        """Yield Examples for the first ``n`` usable rows, in dataset order.

        Rows ``keep`` rejects are passed over and do not count. Rows whose id is in ``skip_ids``
        (finished in an earlier run) count towards ``n`` but are not built, so a resumed run
        covers the same rows without decoding their images again. Each example draws its random
        choices from its own generator seeded by (task, seed, id), so its context is the same
        whatever ``n``, shard or resume point. The rows load here, so a bad source fails at the
        call, not at the first ``next()``.
        """
        if n is not None and n < 0:
            raise ValueError(f"n must be >= 0 or None, got {n}")
        return self._iter_examples(self.rows(source), n, seed, skip_ids)

    def _iter_examples(
        self, rows: Sequence[Row], n: int | None, seed: int, skip_ids: Collection[str]
    ) -> Iterator[Example]:
        taken = rejected = 0
        for index in range(len(rows)):
            if n is not None and taken >= n:
                break
            row = rows[index]
            if self.keep is not None and not self.keep(row):
                rejected += 1
                continue
            taken += 1
            example_id = self.row_id(row, index)
            if example_id in skip_ids:
                continue
            yield self.to_example(row, index, rows, example_rng(self.name, seed, example_id))
        if rejected:
            logger.info("%s: passed over %d rows that the task cannot use", self.name, rejected)
        if n is not None and taken < n:
            logger.warning("%s: only %d usable rows (asked for %d)", self.name, taken, n)

    def score(self, prediction: str, example: Example) -> dict[str, float]:
        return score_all(prediction, example.golds, self.metrics)


def example_rng(task: str, seed: int, example_id: str) -> random.Random:
    # A string seed is hashed with SHA-512 by `random`, so this is stable across runs and machines.
    return random.Random(f"{task}:{seed}:{example_id}")


# ---------------------------------------------------------------- answers, passages, images


def parse_answers(value: Any, where: str = "row") -> list[str]:
    """Gold answers as a list of strings; MP-DocVQA stores them as a Python list literal in a string."""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("["):
            try:
                value = ast.literal_eval(stripped)
            except (ValueError, SyntaxError) as err:
                raise ValueError(f"{where}: answers {value!r} look like a list but do not parse") from err
        else:
            return [value]
    if isinstance(value, (list, tuple)) and value:
        return [str(answer) for answer in value]
    raise ValueError(f"{where}: expected a non-empty list of answers, got {value!r}")


@dataclass(frozen=True)
class Passage:
    """One paragraph of a text QA context; ``is_evidence``: it holds the answer (the rest are distractors)."""

    title: str
    text: str
    is_evidence: bool


def passage_example(example_id: str, question: str, golds: list[str], evidence: list[Passage],
                    distractors: list[Passage], rng: random.Random, **meta: Any) -> Example:
    """A text QA Example (nq, hotpot): evidence and distractors shuffled together, numbered as the model sees
    them (``Evidence 1 (Title): text``, blank-line separated); ``meta`` records the titles and where the
    evidence went."""
    mixed = evidence + distractors
    rng.shuffle(mixed)
    context = "\n\n".join(f"Evidence {i} ({p.title}): {p.text}" for i, p in enumerate(mixed, start=1))
    titles = [p.title for p in mixed]
    evidence_positions = [i for i, p in enumerate(mixed) if p.is_evidence]
    return Example(id=example_id, question=question, golds=golds, context=context, instruction=TEXT_QA_INSTRUCTION,
                   meta={"titles": titles, "evidence_positions": evidence_positions, **meta})
