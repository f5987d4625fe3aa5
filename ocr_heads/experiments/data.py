"""Which examples an experiment runs on: ``--data`` sources per dataset, the usable rows, their model inputs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from ocr_heads.tasks import Example, Task, all_tasks, get_task

if TYPE_CHECKING:  # type hints only: the experiment registry imports this module, and must stay torch-free
    from ocr_heads.models import ModelAdapter, ModelInputs

logger = logging.getLogger(__name__)


def resolve_sources(datasets: list[str], data: list[str] | None) -> dict[str, str | None]:
    """Map each dataset to its source from ``--data`` items: ``NAME=PATH`` for one dataset, or a bare
    PATH that is either a dataset folder (holding e.g. ``DocVQA/``, ``nq/...`` as download.sh lays
    them out) or, with a single dataset, that dataset's own source. Unmapped datasets use their
    task default (a copy under dataset/, else the hub)."""
    sources: dict[str, str | None] = {}
    bare = []
    for item in data or []:
        name, sep, path = item.partition("=")
        if sep and name in all_tasks():
            if name not in datasets:
                raise ValueError(f"--data {item}: {name} is not among --datasets {datasets}")
            sources[name] = path
        else:
            bare.append(item)
    for name in datasets:
        local = get_task(name).local_default
        for path in bare:
            if name not in sources and local and (Path(path) / local).exists():
                sources[name] = str(Path(path) / local)
    if bare:
        unassigned = [name for name in datasets if name not in sources]
        if len(datasets) == 1 and len(bare) == 1 and unassigned:
            sources[unassigned[0]] = bare[0]
        elif unassigned:
            raise ValueError(f"--data {' '.join(bare)}: cannot tell which of {unassigned} it is for; "
                             "write NAME=PATH")
    return {name: sources.get(name) for name in datasets}


def example_refs(task: Task, rows, n: int | None) -> list[tuple[int, str]]:
    """(row index, id) of the first ``n`` usable rows, as ``Task.examples`` picks them, without
    building any example: pages are decoded one sample at a time, only for samples still to do."""
    refs = []
    for index in range(len(rows)):
        if n is not None and len(refs) >= n:
            break
        if task.keep is None or task.keep(rows[index]):
            refs.append((index, task.row_id(rows[index], index)))
    if n is not None and len(refs) < n:
        logger.warning("%s: only %d usable rows (asked for %d)", task.name, len(refs), n)
    return refs


def example_inputs(adapter: ModelAdapter, example: Example) -> ModelInputs:
    """The model inputs of one example: pages + prompt, or the text context + the rest of the prompt."""
    if example.pages:
        return adapter.image_inputs(example.pages, example.prompt)
    if example.context is None:
        raise ValueError(f"example {example.id} has neither pages nor a context")
    # Example.prompt is "{context}\n\n{question part}", exactly what text_inputs composes.
    return adapter.text_inputs(example.context, example.prompt.removeprefix(f"{example.context}\n\n"))
