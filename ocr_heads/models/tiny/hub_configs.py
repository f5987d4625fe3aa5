"""Tiny random checkpoints from a real checkpoint's published hub files, with only sizes shrunk.

The family builders (``tiny_qwen``, ``tiny_llava``, ``tiny_gemma3``, ``tiny.build_tiny_internvl``) share this:
load ``configs/hub/<checkpoint>/config.json`` as published, shrink its size fields (layers, widths, heads,
vocabulary) in place, point its token ids at the project's character tokenizer (which carries the published
special-token strings), read it back through ``AutoConfig`` so the release's format quirks go through
transformers' own loading code, and save a random model next to the published ``preprocessor_config.json``,
copied verbatim so the adapter's loading code meets the published processor file, not a re-saved one.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoConfig, AutoImageProcessor, PretrainedConfig

logger = logging.getLogger(__name__)

HUB_CONFIGS = Path(__file__).resolve().parents[3] / "configs" / "hub"
PROCESSOR_FILE = "preprocessor_config.json"


def published(checkpoint: str, name: str = "config.json") -> dict:
    """A published file of ``configs/hub/<checkpoint>``, parsed."""
    return json.loads((HUB_CONFIGS / checkpoint / name).read_text())


def read_back(config: dict) -> PretrainedConfig:
    """``config`` as transformers loads a ``config.json`` holding it (defaults filled, legacy keys converted)."""
    with tempfile.TemporaryDirectory() as scratch:
        (Path(scratch) / "config.json").write_text(json.dumps(config))
        return AutoConfig.from_pretrained(scratch)


def special_token_ids(tokenizer, tokens: list[str]) -> dict[str, int]:
    return {token: tokenizer.convert_tokens_to_ids(token) for token in tokens}


def shrink_decoder(text: dict, vocab_size: int, num_layers: int, hidden_size: int, num_heads: int,
                   num_kv_heads: int, head_dim: int | None = None) -> None:
    """Shrink the size fields of a published language-model config in place; every other field stays.

    ``head_dim`` is written when given, or when the published file states one (then ``hidden / heads``).
    Layer counts that cap a published layer range (``max_window_layers``) are cut to the tiny depth.
    """
    text.update(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_kv_heads)
    if head_dim is not None or "head_dim" in text:
        text["head_dim"] = head_dim or hidden_size // num_heads
    if "max_window_layers" in text:
        text["max_window_layers"] = num_layers


def shrink_vit(vision: dict, hidden_size: int = 32, num_layers: int = 1, num_heads: int = 2) -> None:
    """Shrink a ViT-style vision config (SigLIP, InternViT) in place; image and patch sizes (the geometry) stay."""
    vision.update(hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=num_layers,
                  num_attention_heads=num_heads)


def save_random_model(model_class: type, config, tokenizer, image_processor, out: Path, seed: int,
                      family: str, suppress_tokens: list[int] | None = None) -> Path:
    """Initialise ``model_class(config)`` from ``seed`` and save it with its tokenizer and image processor.

    ``suppress_tokens`` are never generated (e.g. image placeholders, which a random model would otherwise
    emit and which a no-cache re-run of prompt + output would then read as image tokens without features).
    """
    torch.manual_seed(seed)
    model = model_class(config).eval()
    # Saved into config.json so every score computed from this model is labelled as noise.
    model.config.ocr_heads_random_weights = True
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    model.generation_config.do_sample = False
    if suppress_tokens:
        model.generation_config.suppress_tokens = sorted(suppress_tokens)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    image_processor.save_pretrained(out)
    logger.info("wrote a tiny random %s (%d parameters) to %s", family, model.num_parameters(), out)
    return out


def save_tiny(model_class: type, config: dict, tokenizer, checkpoint: str, out: str | Path, seed: int, family: str,
              suppress_tokens: list[int] | None = None) -> Path:
    """Read the shrunk ``config`` back through ``AutoConfig``, save a random ``model_class`` of it with ``tokenizer``
    to ``out``, and copy ``configs/hub/<checkpoint>/preprocessor_config.json`` there verbatim."""
    source = HUB_CONFIGS / checkpoint / PROCESSOR_FILE
    # The processor as transformers loads the published file (the PIL backend without torchvision).
    with tempfile.TemporaryDirectory() as scratch:
        shutil.copyfile(source, Path(scratch) / PROCESSOR_FILE)
        image_processor = AutoImageProcessor.from_pretrained(scratch)
    out = save_random_model(model_class, read_back(config), tokenizer, image_processor, Path(out), seed, family,
                             suppress_tokens=suppress_tokens)
    # The file as published, not as re-saved: its quirks (null fields, top-level min/max_pixels that override
    # `size`, crop_to_patches false, a torchvision processor type) must meet the adapter's loading code.
    shutil.copyfile(source, out / PROCESSOR_FILE)
    return out
