"""The ``ocr-heads`` console command: lazy dispatch onto the scripts' own mains, help, unknown commands."""

from __future__ import annotations

import inspect
import runpy
import subprocess
import sys
import types
from pathlib import Path

import pytest

from ocr_heads import cli

ROOT = Path(__file__).resolve().parents[1]
# runpy warns that the module it re-runs as __main__ was already imported (by the ocr-heads run before it).
pytestmark = pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")


def test_help_lists_every_command_with_its_summary_and_imports_no_torch():
    code = ("import sys; from ocr_heads.cli import main; status = main(['--help']); "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'help imported torch'; "
            "sys.exit(status)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: ocr-heads <command> [args]")
    for name, command in cli.COMMANDS.items():
        assert f"  {name}  " in done.stdout or f"  {name} " in done.stdout
        assert command.summary in done.stdout


def test_no_command_prints_the_usage_and_exits_2(capsys):
    assert cli.main([]) == 2
    assert "commands:" in capsys.readouterr().err


def test_unknown_command_is_one_error_line_with_the_list(capsys):
    assert cli.main(["step4", "--n", "3"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown command 'step4'")
    assert all(name in lines[0] for name in cli.COMMANDS)
    assert captured.out == ""


def test_dispatch_passes_the_rest_of_argv_and_returns_the_status(monkeypatch):
    calls = []

    def fake_main(kind: str, argv: list[str] | None = None) -> int | None:
        calls.append((kind, argv, sys.argv[0]))
        return None if argv == ["--fine"] else 5

    module = types.ModuleType("ocr_heads_fake_command")
    module.main = fake_main
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(cli.COMMANDS, "fake", cli.Command(module.__name__, "main", "a fake", "fake.py", ("image",)))
    argv0 = sys.argv[0]
    assert cli.main(["fake", "--n", "3", "--out", "x"]) == 5
    assert cli.main(["fake", "--fine"]) == 0  # a main that returns None exits 0
    assert calls == [("image", ["--n", "3", "--out", "x"], "ocr-heads fake"), ("image", ["--fine"], "ocr-heads fake")]
    assert sys.argv[0] == argv0  # the program name is restored after the command


def test_every_command_names_a_main_that_takes_argv():
    for name, command in cli.COMMANDS.items():
        function = command.load()
        parameters = inspect.signature(function).parameters
        assert "argv" in parameters, name
        assert len(parameters) == len(command.leading) + 1 or "description" in parameters, name


def _help_of(run, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run()
    assert exit_info.value.code in (0, None)
    return capsys.readouterr().out


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_command_help_is_its_script_help(name, monkeypatch, capsys):
    """``ocr-heads NAME --help`` prints what its script / ``python -m`` name prints (the program name aside)."""
    monkeypatch.setenv("COLUMNS", "1000")  # argparse wraps by width; the program names differ in length
    command = cli.COMMANDS[name]
    ours = _help_of(lambda: sys.exit(cli.main([name, "--help"])), capsys)
    monkeypatch.setattr(sys, "argv", ["PROG", "--help"])
    if command.same_as.startswith("python -m "):
        theirs = _help_of(lambda: runpy.run_module(command.same_as.split()[-1], run_name="__main__"), capsys)
    else:  # run_path sets sys.argv[0] to the script's path: argparse names the program after the file
        theirs = _help_of(lambda: runpy.run_path(str(ROOT / command.same_as), run_name="__main__"), capsys)
        theirs = theirs.replace(f"usage: {command.same_as}", "usage: PROG")
    assert ours.startswith("usage: ")
    assert ours.replace(f"usage: ocr-heads {name}", "usage: PROG") == theirs
