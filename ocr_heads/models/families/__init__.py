"""What each model family declares, torch-free: the ``model_type`` values it serves, its knobs, and where its
loader lives (a ``"module:object"`` reference, imported only when a checkpoint of that type loads).

One module per family in this package defines ``FAMILIES`` (a tuple of :class:`Family`); the registry in
:mod:`ocr_heads.models` finds them without importing any adapter, so every command builds its parser (family
knobs included) without torch. The adapter class reads its ``KNOBS`` from the same declaration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ocr_heads.core.registry import resolve

__all__ = ["Family", "Knob"]


@dataclass(frozen=True)
class Knob:
    """A family's own setting of how pages become tokens, declared once in its :class:`Family` (the adapter's
    ``KNOBS`` is that tuple): ``--NAME`` on every command (:mod:`ocr_heads.models.options`), the keyword argument
    NAME of the adapter."""

    name: str
    type: type  # int: a positive integer; bool: a switch (--NAME on, --no_NAME off)
    help: str
    default: int | bool | None = None  # None: the protocol decides

    def check(self, value: object, prefix: str = "") -> None:
        """ValueError unless ``value`` fits the knob's type (an int knob also >= 1); ``prefix`` starts the knob's
        name in the message ("--" on the command line)."""
        if self.type is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{prefix}{self.name} is a switch (True or False), got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{prefix}{self.name} must be an integer, got {value!r}")
        elif value < 1:
            raise ValueError(f"{prefix}{self.name} must be positive, got {value}")


@dataclass(frozen=True)
class Family:
    """One ``model_type``: its loader (``"package.module:object"``, or the callable itself for a family registered
    with :func:`~ocr_heads.models.register_family`), called ``loader(model_id, **adapter_kwargs)``, and its knobs."""

    model_type: str
    loader: str | Callable[..., Any]
    knobs: tuple[Knob, ...] = ()
    text_only: bool = False  # a language model without a vision tower: it reads text, never pages

    def load(self) -> Callable[..., Any]:
        """The loader (usually the adapter class), importing its module now."""
        return resolve(self.loader) if isinstance(self.loader, str) else self.loader
