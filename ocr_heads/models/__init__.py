"""Model adapters: one per family, chosen from the checkpoint's config through a registry.

A family is one module that registers its loader with :func:`register_family` for the
``model_type`` values it serves; :data:`FAMILY_MODULES` lists the modules imported (lazily, on the
first lookup) so that they register themselves. Adding a family = one module + one line here.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path

from ocr_heads.models.base import AttentionShape, ImageTokens, ModelAdapter, ModelInputs

__all__ = ["AttentionShape", "ImageTokens", "ModelAdapter", "ModelInputs", "family_loader", "load_adapter",
           "model_type", "register_family", "registered_families", "supported_model_types"]

# Modules that register a family when imported.
FAMILY_MODULES = ("ocr_heads.models.qwen2_vl", "ocr_heads.models.internvl", "ocr_heads.models.internvl2_convert",
                  "ocr_heads.models.qwen_family", "ocr_heads.models.llava_onevision", "ocr_heads.models.gemma3",
                  "ocr_heads.models.smolvlm")

Loader = Callable[..., ModelAdapter]
_LOADERS: dict[str, Loader] = {}


def register_family(*model_types: str) -> Callable[[Loader], Loader]:
    """Decorator: ``loader(model_id, **adapter_kwargs)`` serves checkpoints of these ``model_type`` values."""

    def register(loader: Loader) -> Loader:
        for kind in model_types:
            if kind in _LOADERS and _LOADERS[kind] is not loader:
                raise ValueError(f"model type {kind!r} is registered twice")
            _LOADERS[kind] = loader
        return loader

    return register


def _loaders() -> dict[str, Loader]:
    for module in FAMILY_MODULES:
        importlib.import_module(module)
    return _LOADERS


def registered_families() -> dict[str, Loader]:
    """Model type -> loader, in registration order (:data:`FAMILY_MODULES` order)."""
    return dict(_loaders())


def supported_model_types() -> list[str]:
    return sorted(_loaders())


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


def family_loader(model_id: str) -> Loader:
    """The registered loader (usually the adapter class) that serves ``model_id``."""
    kind = model_type(model_id)
    loaders = _loaders()
    if kind not in loaders:
        raise ValueError(f"{model_id}: model type {kind!r} is not supported (supported: {', '.join(sorted(loaders))})")
    return loaders[kind]


def load_adapter(model_id: str, **kwargs) -> ModelAdapter:
    """Load the adapter for ``model_id`` (hub id or local dir)."""
    return family_loader(model_id)(model_id, **kwargs)
