"""Tiny random text-only language models, from the published files of the base LLMs the paper compares with:

    python -m ocr_heads.models.tiny --family qwen2 --out models/tiny-qwen2         # Qwen2-1.5B-Instruct's files
    python -m ocr_heads.models.tiny --family internlm2 --out models/tiny-internlm2 # internlm2_5-7b-chat's files

``configs/hub/<checkpoint>/config.json`` is loaded as published and only its sizes are shrunk (the vocabulary size
stays, so every special token keeps its published id). Qwen2 uses the real Qwen2 vocabulary (the BPE ranks of
PyPI's ``dashscope`` wheel, :mod:`ocr_heads.models.tiny.qwen2_vocab`) with the three special tokens Qwen2-Instruct
publishes and its published chat template. InternLM2.5's sentencepiece vocabulary cannot be had offline, so its
``tokenizer.json`` is a character-level stand-in with every published special token at its published id; the
published ``tokenizer_config.json`` (chat template included) is copied verbatim and the weights are written in
InternLM2's own remote-code layout (fused ``wqkv``), which :mod:`ocr_heads.models.internlm2_convert` converts on
first load, as it would a real checkpoint. Weights are random: scores are noise.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch
from transformers import Qwen2ForCausalLM

from ocr_heads.models.hub_fixture import (
    RANDOM_MARK,
    char_tokenizer_json,
    internlm2_random_weights,
    published_added_tokens,
)
from ocr_heads.models.tiny.build import tiny_builder
from ocr_heads.models.tiny.hub_configs import HUB_CONFIGS, published, read_back, shrink_decoder

logger = logging.getLogger(__name__)

QWEN2_CHECKPOINT = "Qwen2-1.5B-Instruct"
INTERNLM2_CHECKPOINT = "internlm2_5-7b-chat"
TOKENIZER_CONFIG = "tokenizer_config.json"


def _shrink(config: dict, num_layers: int, hidden_size: int, num_heads: int, num_kv_heads: int) -> dict:
    shrink_decoder(config, config["vocab_size"], num_layers, hidden_size, num_heads, num_kv_heads)
    config[RANDOM_MARK] = True  # every score computed from it is labelled as noise
    return config


@tiny_builder("qwen2", text_only=True)
def build_tiny_qwen2(out: str | Path, seed: int = 0, num_layers: int = 3, hidden_size: int = 64, num_heads: int = 4,
                     num_kv_heads: int = 2) -> Path:
    """Write a tiny random Qwen2 causal LM (Qwen2-1.5B-Instruct's files, sizes shrunk, real vocabulary) to ``out``.

    Raises VocabUnavailable (one error line on the command line) when the Qwen2 vocabulary cannot be had."""
    from ocr_heads.models.tiny.qwen2_vocab import TEXT_SPECIAL_TOKENS, build_qwen2_tokenizer, ranks_file

    out = Path(out)
    published_tokenizer = published(QWEN2_CHECKPOINT, TOKENIZER_CONFIG)
    tokenizer = build_qwen2_tokenizer(ranks_file(), published_tokenizer["chat_template"], TEXT_SPECIAL_TOKENS)
    declared = {entry["content"]: int(i) for i, entry in published_tokenizer["added_tokens_decoder"].items()}
    moved = {token: i for token, i in declared.items() if tokenizer.convert_tokens_to_ids(token) != i}
    if moved:
        raise ValueError(f"Qwen2 tokenizer: special tokens not at their published ids: {moved}")
    config = read_back(_shrink(published(QWEN2_CHECKPOINT), num_layers, hidden_size, num_heads, num_kv_heads))
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).eval()
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.do_sample = False
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    logger.info("wrote a tiny random Qwen2 (%d parameters) to %s", model.num_parameters(), out)
    return out


@tiny_builder("internlm2", text_only=True)
def build_tiny_internlm2(out: str | Path, seed: int = 0, num_layers: int = 3, hidden_size: int = 64,
                         num_heads: int = 4, num_kv_heads: int = 2) -> Path:
    """Write a tiny random InternLM2.5 chat checkpoint in its remote-code layout (internlm2_5-7b-chat's files, sizes
    shrunk, character-level stand-in vocabulary) to ``out``; it loads through the InternLM2 converter."""
    from safetensors.torch import save_file

    out = Path(out)
    source = HUB_CONFIGS / INTERNLM2_CHECKPOINT
    config = _shrink(published(INTERNLM2_CHECKPOINT), num_layers, hidden_size, num_heads, num_kv_heads)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    shutil.copyfile(source / TOKENIZER_CONFIG, out / TOKENIZER_CONFIG)
    char_tokenizer_json(published_added_tokens(source), out / "tokenizer.json")
    save_file(internlm2_random_weights(config, seed), str(out / "model.safetensors"))
    logger.info("wrote a tiny random InternLM2.5 chat checkpoint (remote-code layout) to %s", out)
    return out
