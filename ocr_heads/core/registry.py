"""One registry mechanism for every "find it by name" list: scores, experiments, tasks, model families,
tiny builders.

A :class:`Registry` is filled from one package: on the first lookup it imports every module of the
package (sorted by name; private ``_modules`` and subpackages are not part of it) and keeps

- what the modules *declare*: ``find(module)`` returns the entries a module defines (``SCORE``,
  ``EXPERIMENT``, every Task object), and
- what the modules *register* while they are imported: ``@registry.register("name", ...)``.

So adding an entry is one new module; no list anywhere names the modules. Two entries under one
name are refused with :class:`DuplicateName`. :func:`lazy` is a ``"module:object"`` reference that
imports its module only when called: declarations that must stay light (an experiment listed by
the torch-free report) name heavy code that way.

Torch-free and independent of the rest of the package: it may be imported from anywhere.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any, Generic, TypeVar

__all__ = ["DuplicateName", "Registry", "UnknownName", "declared", "discover", "lazy", "resolve"]

T = TypeVar("T")


class DuplicateName(ValueError):
    """Two entries of one registry claim the same name."""


class UnknownName(KeyError, ValueError):
    """No entry of a registry has this name (a KeyError to dict-minded callers, a ValueError to the CLIs)."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


def discover(package: str) -> list[ModuleType]:
    """Import every module of ``package`` (not its subpackages, not ``_private`` ones), sorted by name."""
    path = importlib.import_module(package).__path__
    names = sorted(info.name for info in pkgutil.iter_modules(path) if not info.ispkg and not info.name.startswith("_"))
    return [importlib.import_module(f"{package}.{name}") for name in names]


def resolve(reference: str) -> Any:
    """``"package.module:object"`` -> the object, importing the module now."""
    module, sep, name = reference.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"a reference reads 'package.module:object', not {reference!r}")
    return getattr(importlib.import_module(module), name)


def lazy(reference: str) -> Callable[..., Any]:
    """A stand-in for the callable ``"package.module:object"`` that imports its module on the first call."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return resolve(reference)(*args, **kwargs)

    call.__name__ = call.__qualname__ = reference.rpartition(":")[2]
    call.__doc__ = f"Calls {reference} (imported on first use)."
    return call


def declared(attribute: str) -> Callable[[ModuleType], list[Any]]:
    """A ``find`` for :class:`Registry`: the module's ``attribute`` (``SCORE``), where it defines one."""

    def find(module: ModuleType) -> list[Any]:
        return [getattr(module, attribute)] if hasattr(module, attribute) else []

    return find


def _no_declarations(module: ModuleType) -> Iterable[Any]:
    return ()


class Registry(Generic[T]):
    """Name -> entry for the modules of ``package``, found on the first lookup and kept.

    ``what`` names the entries in errors ("score", "model type"); ``find(module)`` returns what a module
    declares and ``name(entry)`` the name each declared entry is filed under.
    """

    def __init__(self, what: str, package: str, find: Callable[[ModuleType], Iterable[T]] = _no_declarations,
                 name: Callable[[T], str] = lambda entry: entry.name) -> None:  # type: ignore[attr-defined]
        self.what = what
        self.package = package
        self._find = find
        self._name = name
        self._entries: dict[str, T] = {}
        self._state = "new"  # new -> discovering -> found

    def add(self, name: str, entry: T) -> T:
        """File ``entry`` under ``name``; the same object twice is fine (a re-export), two objects are not."""
        old = self._entries.get(name)
        if old is not None and old is not entry:
            raise DuplicateName(f"{self.what} {name!r} is registered twice: {_where(old)} and {_where(entry)}")
        self._entries[name] = entry
        return entry

    def register(self, *names: str) -> Callable[[T], T]:
        """Decorator: file the decorated object under every one of ``names``."""

        def decorate(entry: T) -> T:
            for name in names:
                self.add(name, entry)
            return entry

        return decorate

    def get(self, name: str) -> T:
        """The entry filed under ``name``; :class:`UnknownName` listing the registered names otherwise."""
        entries = self.all()
        if name not in entries:
            raise UnknownName(f"unknown {self.what} {name!r} (registered: {', '.join(entries)})")
        return entries[name]

    def all(self) -> dict[str, T]:
        """Every entry, sorted by name (the package's modules are imported on the first call)."""
        if self._state == "new":
            # Modules register while they are imported; one that looks the registry up at import time
            # sees what is filed so far instead of starting a second discovery.
            self._state = "discovering"
            try:
                for module in discover(self.package):
                    for entry in self._find(module):
                        self.add(self._name(entry), entry)
            except BaseException:
                self._state = "new"
                raise
            self._state = "found"
        return dict(sorted(self._entries.items()))


def _where(entry: object) -> str:
    module = getattr(entry, "__module__", None) or type(entry).__module__
    return f"{getattr(entry, '__qualname__', type(entry).__name__)} ({module})"
