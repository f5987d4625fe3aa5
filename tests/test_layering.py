"""The house rules, checked from the source: commands at the package root, no import cycles, ``core`` at the
bottom, and the torch-free parts staying torch-free.

Imports are read from the source text (every ``import`` statement: top level, inside functions and under
``TYPE_CHECKING``), so a cycle hidden behind a function-local import is still a cycle. ``from pkg import name``
is an edge to ``pkg.name`` when that is a module of the package, else to ``pkg``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ocr_heads"
COMMANDS = {"__init__", "__main__", "cli", "demo", "doctor", "inspect", "smoke", "look"}


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules(package: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(path, package): path for path in sorted(package.rglob("*.py"))}


def imported_modules(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The package modules ``path`` (module ``name``) imports anywhere in its source."""
    top = name.split(".")[0]
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source
                       for alias in node.names]
        else:
            continue
        found.update(target for target in targets if target == top or target.startswith(top + "."))
    found.discard(name)
    return {target for target in found if target in modules}


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    modules = package_modules(package)
    return {name: imported_modules(path, name, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``a -> b -> ... -> a``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_cycle_finder_on_hand_built_graphs():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"a.x"}, "a.x": {"a"}}) == ["a", "a.x", "a"]


def test_edges_count_function_local_and_type_checking_imports(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    for name in ("__init__.py", "sub/__init__.py", "sub/b.py", "c.py"):
        (package / name).write_text("")
    (package / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.c import x\n"
        "def f():\n    from pkg.sub import b\n    from . import c\n")
    graph = import_graph(package)
    assert graph["pkg.a"] == {"pkg.c", "pkg.sub.b"}


def test_package_root_holds_only_commands():
    stray = sorted(path.stem for path in PACKAGE.glob("*.py") if path.stem not in COMMANDS)
    assert stray == [], f"library modules at the package root (move them into a concept package): {stray}"


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_core_imports_nothing_else_of_the_package():
    graph = import_graph()
    upward = {name: sorted(t for t in targets if not t.startswith("ocr_heads.core"))
              for name, targets in graph.items() if name.startswith("ocr_heads.core")}
    assert {name: targets for name, targets in upward.items() if targets} == {}


def test_commands_are_not_imported_by_the_library():
    """A command may import the library; the library never imports a command (cli, demo, doctor, ...)."""
    graph = import_graph()
    commands = {f"ocr_heads.{name}" for name in COMMANDS - {"__init__"}}
    offenders = {name: sorted(targets & commands) for name, targets in graph.items()
                 if name not in commands and name != "ocr_heads" and targets & commands}
    assert offenders == {}


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("modules", [
    "ocr_heads.scores, ocr_heads.report",
    "ocr_heads.scores.files, ocr_heads.scores.selection, ocr_heads.core.provenance, ocr_heads.core.runner",
    "ocr_heads.scores.wu, ocr_heads.report.base_llm, ocr_heads.data.fonts",
])
def test_torch_free_parts_stay_torch_free(modules):
    result = run_python(f"import sys\nimport {modules}\nassert 'torch' not in sys.modules, 'torch was imported'")
    assert result.returncode == 0, result.stderr[-2000:]


def test_registries_list_without_torch():
    """Listing scores (what step3 and the report read) and experiment titles (the report's sections)
    imports no model code."""
    code = ("import sys\nfrom ocr_heads.scores import all_scores\n"
            "from ocr_heads.experiments.registry import all_experiments\n"
            "scores = all_scores(); titles = [e.title for e in all_experiments().values()]\n"
            "assert scores['ocr'].modality == 'image' and titles, (scores, titles)\n"
            "assert 'torch' not in sys.modules, 'torch was imported'")
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-2000:]
