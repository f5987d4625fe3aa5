"""The wheel installs and gives a working ``ocr-heads`` command (offline, no dependency downloads).

The wheel is built from a copy of the package sources (the checkout gets no build/ or egg-info) with
the running interpreter's setuptools (``--no-build-isolation``: nothing is fetched), and installed with
``--no-deps`` into a fresh venv. That venv sees the test interpreter's packages (torch, transformers, ...)
through a ``.pth`` file listing their folders: ``venv --system-site-packages`` would not do, since it
exposes the base Python's site-packages, not those of the venv the tests run in. The folders are
appended to sys.path without processing their own ``.pth`` files, so an editable install of the
checkout there stays invisible, and the venv's own site-packages (the wheel) comes first anyway.
"""

from __future__ import annotations

import importlib.util
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.install


def _pip_supports_python_option() -> bool:
    done = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True, text=True)
    if done.returncode != 0:
        return False
    major, minor = (int(part) for part in done.stdout.split()[1].split(".")[:2])
    return (major, minor) >= (22, 3)  # pip --python PATH: install into another environment


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with the ocr-heads wheel installed; its bin folder."""
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("building the wheel offline needs setuptools in the test environment")
    if not _pip_supports_python_option():
        pytest.skip("installing into another venv needs pip >= 22.3 (pip --python)")
    tmp = tmp_path_factory.mktemp("install")
    source = tmp / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "ocr_heads", source / "ocr_heads", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), str(source)],
                   check=True, capture_output=True, timeout=120)
    wheel = next((tmp / "dist").glob("ocr_heads-*.whl"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    subprocess.run([*pip, "--python", str(venv / "bin" / "python"), "install", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True, timeout=120)
    where = "import sysconfig; print(sysconfig.get_path('purelib'))"
    purelib = subprocess.run([str(venv / "bin" / "python"), "-c", where], check=True, capture_output=True,
                             text=True).stdout.strip()
    (Path(purelib) / "test_environment.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return venv / "bin"


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "COLUMNS": "120"})


def test_wheel_gives_the_ocr_heads_command(installed, tmp_path):
    done = _run([str(installed / "ocr-heads"), "--help"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: ocr-heads <command> [args]")
    assert "step2 " in done.stdout and "doctor " in done.stdout
    # The command runs the wheel's package, not the checkout's.
    where = _run([str(installed / "python"), "-c", "import ocr_heads.cli; print(ocr_heads.cli.__file__)"], tmp_path)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(installed.parent), where.stdout


def test_installed_command_runs_a_module_main(installed, tmp_path):
    done = _run([str(installed / "ocr-heads"), "doctor", "--help"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: ocr-heads doctor")
    unknown = _run([str(installed / "ocr-heads"), "nonsense"], tmp_path)
    assert unknown.returncode == 2 and unknown.stderr.startswith("error: unknown command 'nonsense'")


def test_installed_viewer_finds_its_page_template(installed, tmp_path):
    """viewer.html is package data: the wheel must ship it for ``ocr-heads viewer`` to write a page."""
    from look_fixture import make_look_dir

    folder = make_look_dir(tmp_path / "look")
    done = _run([str(installed / "ocr-heads"), "viewer", str(folder)], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "</html>" in (folder / "index.html").read_text()
