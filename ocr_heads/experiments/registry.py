"""The experiment registry: every module of this package that defines ``EXPERIMENT`` (an
:class:`~ocr_heads.experiments.base.Experiment`) is an experiment, found by name.

    masking  exp_masking.py  top-k / random heads masked
    sink     exp_sink.py     top-k heads' sink probability redistributed (beta)

Adding an intervention is one new module here (plus its test and, for a new command, a thin
``exp_NAME.py``); the parser, runner, file names and CSV columns come from its declaration.
See docs/extending.md.
"""

from __future__ import annotations

from ocr_heads.core.registry import Registry, declared
from ocr_heads.experiments.base import Experiment, Option

# By name, not `import ocr_heads.experiments`: this module is one of the package's modules it discovers.
_REGISTRY: Registry[Experiment] = Registry("experiment", __name__.rpartition(".")[0], declared("EXPERIMENT"))


def all_experiments() -> dict[str, Experiment]:
    """Name -> experiment, for every module of the package that defines ``EXPERIMENT`` (sorted by name)."""
    return _REGISTRY.all()


def get_experiment(name: str) -> Experiment:
    return _REGISTRY.get(name)


def all_options() -> tuple[Option, ...]:
    """Every option any experiment declares, once each: the keys every run's config carries (None where a
    run does not use one), so result files of all experiments share one layout."""
    found: dict[str, Option] = {}
    for experiment in all_experiments().values():
        for option in experiment.options:
            if found.setdefault(option.name, option) != option:
                raise RuntimeError(f"option --{option.name} is declared twice, differently")
    return tuple(found.values())
