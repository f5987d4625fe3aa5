"""Evaluation datasets for the masking and sink experiments, one module per dataset.

>>> task = get_task("doc")
>>> for example in task.examples(n=600, seed=0):
...     answer = adapter.generate(example.pages, example.prompt)
...     scores = task.score(answer, example)   # {"anls": ...}
"""

from __future__ import annotations

from ocr_heads.tasks import docvqa, hotpot, mpdocvqa, nq, passkey
from ocr_heads.tasks.base import DEFAULT_N, Example, Task

__all__ = ["DEFAULT_N", "TASKS", "Example", "Task", "get_task"]

TASKS: dict[str, Task] = {
    task.name: task
    for task in (docvqa.TASK, mpdocvqa.TASK, nq.TASK, hotpot.TASK, passkey.TASK, passkey.TEXT_TASK)
}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(TASKS)}") from None
