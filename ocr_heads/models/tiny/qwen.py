"""Tiny random Qwen2.5-VL, Qwen3-VL(-MoE) and Qwen3.5 checkpoints, built from each family's published hub files.

    python -m ocr_heads.models.tiny --family qwen3_5 --out models/tiny-qwen3_5

The published ``config.json`` and ``preprocessor_config.json`` (``configs/hub/<checkpoint>/``) are
loaded as they are, with only sizes shrunk and token ids pointed at the project's character-level
tokenizer (which carries the family's special-token strings and chat format). The shrunk config is
then read back through ``AutoConfig``, so the format quirks of each release (Qwen2.5-VL's flat text
fields and ``rope_scaling: {"type": "mrope"}``, Qwen3.5's ``layer_types`` and vision ``model_type``)
go through transformers' own loading code. ``preprocessor_config.json`` is copied verbatim (the
adapter applies the paper's pixel budget when it loads). Weights are random: scores are noise.
"""

from __future__ import annotations

from pathlib import Path

from transformers import Qwen3_5Tokenizer

from ocr_heads.models.qwen_family import (
    Qwen2_5_VLAdapter,
    Qwen3_5Adapter,
    Qwen3VLAdapter,
    Qwen3VLMoeAdapter,
)
from ocr_heads.models.tiny.build import tiny_builder
from ocr_heads.models.tiny.charset import SPECIAL_TOKENS, UNK, build_byte_level_char_tokenizer, build_char_tokenizer
from ocr_heads.models.tiny.hub_configs import published, save_tiny, shrink_decoder, special_token_ids

THINK_TOKENS = ["<think>", "</think>"]  # in the Qwen3-VL and Qwen3.5 vocabularies


def _rope_section(sections: list[int], half: int) -> list[int]:
    """Shrink an M-RoPE section (temporal, height, width) to ``half`` frequencies, keeping its proportions."""
    scaled = [max(1, round(s * half / sum(sections))) for s in sections]
    scaled[0] += half - sum(scaled)
    return scaled


def shrink_text(text: dict, vocab_size: int, token_ids: dict[str, int], num_layers: int, hidden_size: int,
                num_heads: int, num_kv_heads: int, head_dim: int | None) -> None:
    """Shrink the language-model fields of a published config in place (flat or ``text_config``)."""
    shrink_decoder(text, vocab_size, num_layers, hidden_size, num_heads, num_kv_heads,
                   head_dim=head_dim if "head_dim" in text else None)
    text.update(bos_token_id=token_ids["<|im_start|>"], eos_token_id=token_ids["<|im_end|>"],
                pad_token_id=token_ids["<|endoftext|>"], max_window_layers=num_layers)
    head_dim = head_dim or hidden_size // num_heads
    if "layer_types" in text:  # hybrid models: the published pattern, cut to the tiny depth
        text["layer_types"] = text["layer_types"][:num_layers]
    if "num_experts" in text:  # MoE: a few small experts, each token routed to two
        text.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=hidden_size)
    if "linear_num_key_heads" in text:
        text.update(linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16,
                    linear_value_head_dim=16)
    rope = text.get("rope_parameters") or text.get("rope_scaling")
    if rope and "mrope_section" in rope:
        rotary = int(head_dim * rope.get("partial_rotary_factor", 1.0))
        rope["mrope_section"] = _rope_section(rope["mrope_section"], rotary // 2)


def shrink_vision(vision: dict, out_hidden_size: int, depth: int = 2, hidden_size: int = 32) -> None:
    """Shrink the vision tower; patch, merge and temporal sizes (the token geometry) stay as published."""
    vision.update(depth=depth, hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_heads=2,
                  out_hidden_size=out_hidden_size)
    if "fullatt_block_indexes" in vision:  # Qwen2.5-VL: window attention in block 0, full in the last
        vision["fullatt_block_indexes"] = [depth - 1]
    if vision.get("deepstack_visual_indexes"):  # Qwen3-VL: inject every block into the first decoder layers
        vision["deepstack_visual_indexes"] = list(range(depth))


def build_from_hub(checkpoint: str, family: str, out: str | Path, seed: int, tokenizer, special_tokens: list[str],
                   model_class: type, num_layers: int = 3, hidden_size: int = 64, num_heads: int = 4,
                   num_kv_heads: int = 2, head_dim: int | None = None) -> Path:
    """Shrink ``configs/hub/<checkpoint>`` and save a random model of it with ``tokenizer`` to ``out``."""
    config = published(checkpoint)
    token_ids = special_token_ids(tokenizer, special_tokens)
    text = config.get("text_config", config)  # Qwen2.5-VL's published file keeps text fields at the top
    shrink_text(text, len(tokenizer), token_ids, num_layers, hidden_size, num_heads, num_kv_heads, head_dim)
    shrink_vision(config["vision_config"], hidden_size)
    config.update(image_token_id=token_ids["<|image_pad|>"], video_token_id=token_ids["<|video_pad|>"],
                  vision_start_token_id=token_ids["<|vision_start|>"],
                  vision_end_token_id=token_ids["<|vision_end|>"])
    if "vision_token_id" in config:
        config["vision_token_id"] = token_ids["<|vision_pad|>"]
    vision_tokens = ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")
    return save_tiny(model_class, config, tokenizer, checkpoint, out, seed, family,
                     suppress_tokens=[token_ids[t] for t in vision_tokens])


def build_char_level(adapter: type, checkpoint: str, out: str | Path, seed: int, specials: list[str],
                     **sizes: int) -> Path:
    """A tiny model of ``adapter``'s family from ``checkpoint``'s published files, with the character-level
    tokenizer (``specials`` plus the family's chat format)."""
    tokenizer = build_char_tokenizer(specials, adapter.chat_template)
    return build_from_hub(checkpoint, adapter.family, out, seed, tokenizer, specials, adapter.model_class, **sizes)


@tiny_builder("qwen2_5_vl")
def build_tiny_qwen2_5_vl(out: str | Path, seed: int = 0, **sizes: int) -> Path:
    """Tiny random Qwen2.5-VL from Qwen2.5-VL-7B-Instruct's published files."""
    return build_char_level(Qwen2_5_VLAdapter, "Qwen2.5-VL-7B-Instruct", out, seed, SPECIAL_TOKENS, **sizes)


@tiny_builder("qwen3_vl")
def build_tiny_qwen3_vl(out: str | Path, seed: int = 0, **sizes: int) -> Path:
    """Tiny random Qwen3-VL (with DeepStack) from Qwen3-VL-4B-Instruct's published files."""
    return build_char_level(Qwen3VLAdapter, "Qwen3-VL-4B-Instruct", out, seed, SPECIAL_TOKENS + THINK_TOKENS, **sizes)


@tiny_builder("qwen3_vl_moe")
def build_tiny_qwen3_vl_moe(out: str | Path, seed: int = 0, **sizes: int) -> Path:
    """Tiny random Qwen3-VL-MoE (4 experts, top-2) from Qwen3-VL-30B-A3B-Instruct's published config."""
    return build_char_level(Qwen3VLMoeAdapter, "Qwen3-VL-30B-A3B-Instruct", out, seed, SPECIAL_TOKENS + THINK_TOKENS,
                            **sizes)


@tiny_builder("qwen3_5")
def build_tiny_qwen3_5(out: str | Path, seed: int = 0, num_layers: int = 8, **sizes: int) -> Path:
    """Tiny random Qwen3.5 from Qwen3.5-0.8B's published files: 8 layers, of which 3 and 7 have attention."""
    sizes.setdefault("head_dim", 64)  # a quarter of it is rotary (partial_rotary_factor): room for M-RoPE
    # transformers always loads Qwen3.5 tokenizers as the byte-level Qwen3_5Tokenizer: build that class.
    specials = [t for t in SPECIAL_TOKENS if t != UNK] + THINK_TOKENS
    tokenizer = build_byte_level_char_tokenizer(Qwen3_5Tokenizer, specials, Qwen3_5Adapter.chat_template)
    return build_from_hub("Qwen3.5-0.8B", Qwen3_5Adapter.family, out, seed, tokenizer, specials,
                          Qwen3_5Adapter.model_class, num_layers=num_layers, **sizes)
