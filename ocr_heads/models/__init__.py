"""Model adapters: one per family, chosen from the checkpoint's config through a registry.

A family is one module that registers its loader with :func:`register_family` for the
``model_type`` values it serves. On the first lookup every module of this package is imported
(:class:`~ocr_heads.core.registry.Registry`), so the families register themselves; the helpers
beside them (base, options, protocol, ...) register nothing. Adding a family = one module.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ocr_heads.core import hub
from ocr_heads.core.errors import UserError
from ocr_heads.core.registry import Registry
from ocr_heads.models.base import AttentionShape, ImageTokens, ModelAdapter, ModelInputs

__all__ = ["AttentionShape", "ImageTokens", "ModelAdapter", "ModelInputs", "family_loader", "load_adapter",
           "model_type", "register_family", "registered_families", "supported_model_types"]

Loader = Callable[..., ModelAdapter]
# By name, not the package object: the family modules import this one (`from ocr_heads.models import ...`).
_REGISTRY: Registry[Loader] = Registry("model type", __name__)


def register_family(*model_types: str) -> Callable[[Loader], Loader]:
    """Decorator: ``loader(model_id, **adapter_kwargs)`` serves checkpoints of these ``model_type`` values."""
    return _REGISTRY.register(*model_types)


def registered_families() -> dict[str, Loader]:
    """Model type -> loader, sorted by model type."""
    return _REGISTRY.all()


def supported_model_types() -> list[str]:
    return list(_REGISTRY.all())


def model_type(model_id: str) -> str:
    """The ``model_type`` of a local dir or hub id, with a clear error when there is none."""
    path = Path(model_id)
    if path.exists():
        config = path / "config.json"
        if not config.is_file():
            raise ValueError(f"{model_id} is a directory without config.json: not a model checkpoint")
        return json.loads(config.read_text()).get("model_type", "")
    if model_id.startswith(("/", ".", "~")) or model_id.count("/") > 1:
        # A path, not a hub id ("name" or "org/name"): no need to ask the hub.
        raise ValueError(f"unknown model {model_id!r}: no such local directory")
    if not hub.reachable():
        # Offline: the local cache or nothing, at once (huggingface_hub would retry for most of a minute).
        hub.go_offline()
    from huggingface_hub import hf_hub_download

    # Read config.json itself rather than AutoConfig: remote-code checkpoints (InternVL2) need no code to be named.
    try:
        return json.loads(Path(hf_hub_download(model_id, "config.json")).read_text()).get("model_type", "")
    except (OSError, ValueError) as err:
        if not hub.reachable():
            raise UserError(f"{model_id!r} is not a local directory and the Hugging Face hub is unreachable "
                            f"({hub.why_unreachable()}), with no cached copy: on a connected machine run "
                            f"`hf download {model_id} --local-dir DIR`, then pass --model_id DIR") from None
        raise ValueError(f"unknown model {model_id!r}: not a local directory and not loadable from the hub "
                         f"({err.__class__.__name__})") from err


def family_loader(model_id: str) -> Loader:
    """The registered loader (usually the adapter class) that serves ``model_id``."""
    kind = model_type(model_id)
    loaders = registered_families()
    if kind not in loaders:
        raise ValueError(f"{model_id}: model type {kind!r} is not supported (supported: {', '.join(sorted(loaders))})")
    return loaders[kind]


def load_adapter(model_id: str, **kwargs) -> ModelAdapter:
    """Load the adapter for ``model_id`` (hub id or local dir)."""
    return family_loader(model_id)(model_id, **kwargs)
