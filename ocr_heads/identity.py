"""What made an output: fingerprints of inputs and a guard against mixing runs made differently.

Every output folder (step1 data, step2 scores, experiment runs) records the settings that made it in a
small JSON file. A rerun with the same settings resumes; a rerun with other settings into the same place
is refused with one line that says what differs, so nothing is silently mixed, overwritten or deleted.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from ocr_heads.cli import UserError
from ocr_heads.io import read_json, write_json_atomic

SAMPLES_FILE = "samples.jsonl"
STEP1_SETTINGS = "step1.json"


def file_fingerprint(path: str | Path) -> str:
    """The first 16 hex digits of the SHA-256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def data_fingerprint(data_dir: str | Path | None) -> str | None:
    """Content fingerprint of a step1 folder: of its recorded settings (stable while --n grows), else of
    its samples.jsonl; None for anything else (a hub dataset, a download folder)."""
    if data_dir is None:
        return None
    folder = Path(data_dir)
    for name in (STEP1_SETTINGS, SAMPLES_FILE):
        if (folder / name).is_file():
            return file_fingerprint(folder / name)
    return None


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{key}={old.get(key)!r} (now {new.get(key)!r})" for key in keys if old.get(key) != new.get(key)]


def claim(path: Path, settings: dict[str, Any], what: str, remedy: str) -> None:
    """Record ``settings`` at ``path``, or check that an earlier run recorded the same ones.

    ``what`` names the output ("dataset/passkey", "scores/image/M_fg"); ``remedy`` says how to keep both.
    """
    if path.is_file():
        previous = read_json(path)
        changed = differences(previous, settings) if isinstance(previous, dict) else ["(unreadable settings)"]
        if changed:
            raise UserError(f"{what} was made with other settings: {'; '.join(changed)}. Nothing was written; "
                            f"{remedy}")
        return
    write_json_atomic(path, settings)
