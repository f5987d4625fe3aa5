"""What made an output: fingerprints of inputs, a guard against mixing runs made differently, and the
caveats that travel with numbers made by a random or toy model.

Every output folder (step1 data, step2 scores, experiment runs) records the settings that made it in a
small JSON file. A rerun with the same settings resumes; a rerun with other settings into the same place
is refused with one line that says what differs, so nothing is silently mixed, overwritten or deleted.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from ocr_heads.core.errors import UserError
from ocr_heads.core.io import read_json, write_json_atomic

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


# Caveats: a note is stored next to every number made from a random or toy model (score meta, head lists,
# CSV rows) and repeated in every report header and figure caption built from it.
RANDOM_NOTE = "random weights: these numbers are noise, not findings"
TOY_NOTE = ("toy model: a 1.2M-parameter Qwen2-VL trained on 5-digit passkeys; it shows the pipeline works, "
            "not how real LVLMs read")


def model_note(config: Any, model_id: str) -> str:
    """The caveat for a loaded model ('' for a real checkpoint)."""
    if getattr(config, "ocr_heads_random_weights", False):
        return RANDOM_NOTE
    # The toy trainer (ocr_heads.toy.train) leaves its training log in the model folder.
    if (Path(model_id) / "training_log.json").is_file():
        return TOY_NOTE
    return ""


def note_of(meta: dict[str, Any] | None) -> str:
    """The caveat recorded in a score/result sidecar (key ``warning``; ``note`` in result rows)."""
    if not meta:
        return ""
    return str(meta.get("warning") or meta.get("note") or "")
