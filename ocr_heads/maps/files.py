"""A look folder: ``attention.safetensors`` (``image_attention``: steps x layers x heads x image tokens, and one
``group_mass.NAME`` tensor per token group: steps x layers x heads), ``look.json`` (what the maps are: pieces,
tiles, pages, settings, provenance), the page images and the overlays.

Nothing is half-written: the folder is built in a temporary sibling and renamed into place at the end; a previous
look folder at the same place is replaced whole, any other non-empty folder is refused.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ocr_heads.core.errors import UserError
from ocr_heads.core.io import read_json, write_json_atomic

ATTENTION_FILE = "attention.safetensors"
LOOK_FILE = "look.json"
IMAGE_ATTENTION = "image_attention"
GROUP_PREFIX = "group_mass."


def check_out(out: Path) -> None:
    """Refuse, before any work, an ``--out`` that cannot become a look folder."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / LOOK_FILE).is_file():
        raise UserError(f"--out {out} is a non-empty folder that holds no {LOOK_FILE}: choose a new or empty folder "
                        "(a previous look folder is replaced)")
    existing = out.parent
    while not existing.exists():  # the folders still to be made are made at the end, not now
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"--out {out}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--out {out}: {existing} is not writable")


@contextmanager
def staged(out: Path) -> Iterator[Path]:
    """A temporary folder beside ``out`` to write into; renamed to ``out`` when the block ends without error,
    removed otherwise."""
    check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.new-"))
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
        out.rename(old / "previous")
    stage.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_maps(folder: Path, attention: torch.Tensor, group_mass: dict[str, torch.Tensor]) -> Path:
    """``attention.safetensors`` in ``folder``."""
    tensors = {IMAGE_ATTENTION: attention.contiguous()}
    tensors.update({GROUP_PREFIX + name: mass.contiguous() for name, mass in group_mass.items()})
    path = folder / ATTENTION_FILE
    save_file(tensors, str(path))
    return path


def write_meta(folder: Path, meta: dict[str, Any]) -> Path:
    path = folder / LOOK_FILE
    write_json_atomic(path, meta)
    return path


def read_look(folder: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(look.json, the tensors of attention.safetensors) of a look folder."""
    folder = Path(folder)
    return read_json(folder / LOOK_FILE), load_file(str(folder / ATTENTION_FILE))
