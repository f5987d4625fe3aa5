"""Evaluation datasets for the masking and sink experiments, one module per dataset.

>>> task = get_task("doc")
>>> for example in task.examples(n=600, seed=0):
...     answer = adapter.generate(example.pages, example.prompt)
...     scores = task.score(answer, example)   # {"anls": ...}

Every :class:`Task` a module of this package defines at module level is registered by its name
(``passkey.py`` defines two: ``passkey`` and ``passkey_text``). Adding a dataset = one module.

    base.py     what a task declares (Task, Example) and the passage helpers
    loaders.py  how rows are fetched: Hugging Face datasets, JSON records, local copies under dataset/
    metrics.py  ANLS, EM, F1, accuracy
"""

from __future__ import annotations

from types import ModuleType

from ocr_heads.core.registry import Registry
from ocr_heads.tasks.base import DEFAULT_N, Example, Task

__all__ = ["DEFAULT_N", "Example", "Task", "all_tasks", "get_task"]


def _tasks_of(module: ModuleType) -> list[Task]:
    return [value for value in vars(module).values() if isinstance(value, Task)]


_REGISTRY: Registry[Task] = Registry("task", __name__, _tasks_of)


def all_tasks() -> dict[str, Task]:
    """Name -> task, for every Task the modules of this package define (sorted by name)."""
    return _REGISTRY.all()


def get_task(name: str) -> Task:
    return _REGISTRY.get(name)
