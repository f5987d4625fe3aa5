"""Model adapters: one per family, chosen from the checkpoint's config."""

from __future__ import annotations

import json
from pathlib import Path

from ocr_heads.models.base import AttentionShape, ImageTokens, ModelAdapter, ModelInputs

__all__ = ["AttentionShape", "ImageTokens", "ModelAdapter", "ModelInputs", "load_adapter", "model_type"]


def model_type(model_id: str) -> str:
    """The ``model_type`` of a local dir or hub id, with a clear error when there is none."""
    path = Path(model_id)
    if path.exists():
        config = path / "config.json"
        if not config.is_file():
            raise ValueError(f"{model_id} is a directory without config.json: not a model checkpoint")
        return json.loads(config.read_text()).get("model_type", "")
    from huggingface_hub import hf_hub_download

    # Read config.json itself rather than AutoConfig: remote-code checkpoints (InternVL2) need no code to be named.
    try:
        return json.loads(Path(hf_hub_download(model_id, "config.json")).read_text()).get("model_type", "")
    except (OSError, ValueError) as err:
        raise ValueError(f"unknown model {model_id!r}: not a local directory and not loadable from the hub "
                         f"({err.__class__.__name__})") from err


def load_adapter(model_id: str, **kwargs) -> ModelAdapter:
    """Load the adapter for ``model_id`` (hub id or local dir)."""
    kind = model_type(model_id)
    if kind == "qwen2_vl":
        from ocr_heads.models.qwen2_vl import Qwen2VLAdapter

        return Qwen2VLAdapter(model_id, **kwargs)
    if kind == "internvl":
        from ocr_heads.models.internvl import InternVLAdapter

        return InternVLAdapter(model_id, **kwargs)
    if kind == "internvl_chat":
        # InternVL2 remote-code checkpoint: converted once to the native layout (cached), then loaded natively.
        from ocr_heads.models.internvl import InternVLAdapter
        from ocr_heads.models.internvl2_convert import converted_checkpoint

        adapter = InternVLAdapter(str(converted_checkpoint(model_id)), **kwargs)
        adapter.name = model_id.rstrip("/").split("/")[-1]  # files are named after the id, not the cache dir
        return adapter
    raise ValueError(f"{model_id}: model type {kind!r} is not supported (supported: qwen2_vl, internvl, "
                     "internvl_chat via conversion)")
