"""Caveats that travel with numbers: which outputs come from a random or a toy model.

A note is stored next to every number made from such a model (score meta, head lists, CSV rows) and
repeated in every report header and figure caption built from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
