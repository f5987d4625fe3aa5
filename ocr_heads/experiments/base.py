"""What an experiment is: an intervention on a head set, declared once, run by :mod:`ocr_heads.experiments.run`.

An experiment module (``masking.py``, ``sink.py``) defines ``EXPERIMENT = Experiment(...)``: its command-line
flags, which head set those flags choose, and for every head set the :class:`Edit` it applies: the heads it
takes (a selection rule of :func:`ocr_heads.scores.selection.choose_heads`), the context manager that edits the
model (built from adapter + heads + options) and the numeric options that edit takes (sink: ``beta``). The
runner derives everything else from the declaration: the parser, the file stem suffix of an option
(``_beta0.4``), the CSV columns, the one range check of every option.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ocr_heads.scores.selection import SELECTIONS

if TYPE_CHECKING:
    from ocr_heads.models.base import ModelAdapter, ModelInputs
    from ocr_heads.tasks import Example

# model first: a results CSV may hold several models' rows, which must never be averaged together.
CSV_COLUMNS = ["model", "protocol", "dataset", "task", "head_set", "k", "seed", "metric", "value", "n", "note"]
NONE = "none"  # the head set of the unmodified model: every experiment's baseline
DOCUMENTED = "documented"  # the default --selection: the step3 head list (see ocr_heads.pipeline.experiment)
# Columns added to the result CSVs since their first layout, after CSV_COLUMNS: ``prompt`` (direct | cot) and
# ``selection`` (the head list a ranked head set reads; empty for none and random). A CSV of an older layout is
# extended in place with the value its rows had (``ocr_heads.experiments.run.added_column_value``).
ADDED_COLUMNS = ("prompt", "selection")


# (adapter, heads, options) -> a context manager inside which the model is edited; options hold the edit's numeric
# options and the experiment's choices (masking: {"mask_mode": "image_keys"}). The context may yield BatchKeys.
ContextFactory = Callable[["ModelAdapter", list[str], Mapping[str, float | str]], AbstractContextManager]


# The authors' scripts take --fine_grained; ours accept it (OCR head lists are always the fine-grained ones).
FINE_GRAINED = ("fine_grained", "accepted for the authors' commands; OCR head lists are always the fine-grained ones")


def switches(*flags: tuple[str, str]) -> Callable[[argparse.ArgumentParser], None]:
    """An experiment's ``add_flags`` for on/off flags ``(name, help)``, the kind the authors' scripts take."""

    def add_flags(parser: argparse.ArgumentParser) -> None:
        for name, text in flags:
            parser.add_argument(f"--{name}", action="store_true", help=text)

    return add_flags


@dataclass(frozen=True)
class Option:
    """A numeric option of an edit: ``--NAME`` on the command line, recorded in the run's config, appended to
    its file stem as ``_NAME<value>`` and written to the experiment's CSV column NAME."""

    name: str
    default: float
    low: float
    high: float
    help: str
    symbol: str  # how --help writes its value in file names (sink: ``_betaB``)

    def check(self, value: float) -> float:
        """The one range check of the option (the command line's, before any model is loaded)."""
        if not self.low <= value <= self.high:
            raise ValueError(f"--{self.name} must be in [{self.low:g}, {self.high:g}], got {value:g}")
        return value

    def add_flag(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(f"--{self.name}", type=float, default=self.default,
                            help=f"{self.help} (default {self.default:g})")


@dataclass(frozen=True)
class Choice:
    """A named choice of an experiment (``--NAME`` among ``choices``; masking: ``--mask_mode``), written to the
    CSV column NAME and the run's config. The default value keeps today's file names; any other value is
    appended to the file stem (``_image_keys``). The unmodified model always runs with the default."""

    name: str
    default: str
    choices: tuple[str, ...]
    help: str

    def add_flag(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(f"--{self.name}", choices=self.choices, default=self.default,
                            help=f"{self.help} (default {self.default})")


class BatchKeys(Protocol):
    """What an edit's context may yield when its key sets depend on each sample (the image tokens, the answer's
    evidence tiles): the runner calls ``prepare_batch`` with the batch's examples and model inputs, in batch
    order, before generating it."""

    def prepare_batch(self, examples: Sequence[Example], inputs: Sequence[ModelInputs]) -> None: ...


@dataclass(frozen=True)
class Edit:
    """What one head set does: which heads it takes and how it changes them."""

    selection: str  # choose_heads rule: "top", "random" or "random_disjoint"
    context: ContextFactory
    flags: str  # the experiment's flags that choose this head set (logged as the equivalent command)
    options: tuple[Option, ...] = ()

    def __post_init__(self) -> None:
        if self.selection not in SELECTIONS or self.selection == NONE:
            raise ValueError(f"an edit selects its heads by one of {', '.join(SELECTIONS[1:])}, not {self.selection!r}")


@dataclass(frozen=True)
class Experiment:
    """One registered experiment: ``exp_NAME.py``, results under ``OUT/NAME/`` and ``OUT/NAME.csv``."""

    name: str
    description: str  # --help's description
    edits: Mapping[str, Edit]  # head set -> its edit; NONE (the unmodified model) needs none
    head_set: Callable[[argparse.Namespace], str]  # the head set the parsed flags choose
    add_flags: Callable[[argparse.ArgumentParser], None]  # the experiment's own flags (options are added for it)
    default_datasets: tuple[str, ...]
    default_k: int
    epilog: str = ""  # appended to --help's list of outputs
    title: str = ""  # the report's section title (default: the name)
    # --grid: the (head set, task) pairs of the crossed grid (task None: --task's); empty: no --grid flag
    grid: tuple[tuple[str, str | None], ...] = ()
    choices: tuple[Choice, ...] = ()  # named choices beside the edits (masking: --mask_mode)

    def __post_init__(self) -> None:
        if NONE in self.edits:
            raise ValueError(f"experiment {self.name}: head set {NONE!r} is the unmodified model, not an edit")

    @property
    def script(self) -> str:
        return f"exp_{self.name}.py"

    @property
    def options(self) -> tuple[Option, ...]:
        """Every option its edits take, once each, in declaration order."""
        found: dict[str, Option] = {}
        for edit in self.edits.values():
            for option in edit.options:
                found.setdefault(option.name, option)
        return tuple(found.values())

    @property
    def csv_columns(self) -> list[str]:
        return [*CSV_COLUMNS, *ADDED_COLUMNS, *(option.name for option in self.options),
                *(choice.name for choice in self.choices)]

    def edit(self, head_set: str) -> Edit | None:
        """The edit of ``head_set``; None for the unmodified model."""
        if head_set == NONE:
            return None
        if head_set not in self.edits:
            raise ValueError(f"experiment {self.name} has no head set {head_set!r} "
                             f"(it has: {', '.join([NONE, *self.edits])})")
        return self.edits[head_set]

    def flags(self, head_set: str) -> str:
        """The flags that choose ``head_set`` ("" for the unmodified model)."""
        edit = self.edit(head_set)
        return "" if edit is None else edit.flags
