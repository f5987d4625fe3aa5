"""Model adapters: one per family, chosen from the checkpoint's config through a registry.

What a family serves is declared torch-free in :mod:`ocr_heads.models.families` (one module per family:
``FAMILIES``, each a model type, its knobs and a ``"module:object"`` reference to its loader). On the first
lookup the registry imports those declarations only; an adapter module (and torch) is imported when a checkpoint
of its type loads. So every command lists the families' knobs without torch. Adding a family = its adapter
module plus its declaration. :func:`register_family` files a loader defined elsewhere (a user's own adapter).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ocr_heads.core import hub
from ocr_heads.core.errors import UserError
from ocr_heads.core.registry import Registry
from ocr_heads.models.families import Family

if TYPE_CHECKING:
    from ocr_heads.models.base import AttentionShape, ImageTokens, ModelAdapter, ModelInputs

__all__ = ["AttentionShape", "Family", "ImageTokens", "ModelAdapter", "ModelInputs", "family_loader", "load_adapter",
           "model_type", "register_family", "registered_families", "require_pages", "supported_model_types"]

Loader = Callable[..., "ModelAdapter"]
_REGISTRY: Registry[Family] = Registry("model type", f"{__name__}.families",
                                       lambda module: getattr(module, "FAMILIES", ()),
                                       lambda family: family.model_type)
_ADAPTER_INTERFACE = {"AttentionShape", "ImageTokens", "ModelAdapter", "ModelInputs"}


def __getattr__(name: str) -> Any:
    """The adapter interface (:mod:`ocr_heads.models.base`, which imports torch), imported when first asked for."""
    if name in _ADAPTER_INTERFACE:
        from ocr_heads.models import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register_family(*model_types: str) -> Callable[[Loader], Loader]:
    """Decorator: ``loader(model_id, **adapter_kwargs)`` serves checkpoints of these ``model_type`` values, with
    the knobs of its ``KNOBS``. For a loader outside :mod:`ocr_heads.models.families`' declarations (your own
    adapter): it is filed when its module is imported, so import that module before a command builds its parser."""

    def decorate(loader: Loader) -> Loader:
        for kind in model_types:
            _REGISTRY.add(kind, Family(kind, loader, tuple(getattr(loader, "KNOBS", ()))))
        return loader

    return decorate


def registered_families() -> dict[str, Family]:
    """Model type -> its declaration, sorted by model type (no adapter is imported)."""
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
    families = registered_families()
    if kind not in families:
        raise ValueError(f"{model_id}: model type {kind!r} is not supported (supported: {', '.join(sorted(families))})")
    return families[kind].load()


def require_pages(model_id: str, step: str) -> None:
    """UserError when ``model_id`` is a text-only language model, which ``step`` (a page-reading step) cannot run;
    checked from the declaration alone, before any weights load."""
    kind = model_type(model_id)
    family = registered_families().get(kind)
    if family is not None and family.text_only:
        raise UserError(f"{model_id} is a text-only language model ({kind}): {step} needs a model that reads "
                        "pages; score it with step2_text_retrieval_head.py")


def load_adapter(model_id: str, **kwargs) -> ModelAdapter:
    """Load the adapter for ``model_id`` (hub id or local dir)."""
    return family_loader(model_id)(model_id, **kwargs)
