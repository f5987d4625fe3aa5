"""Tiny random LLaVA-OneVision (``--family llava_onevision``) from llava-onevision-qwen2-0.5b-ov-hf's hub files.

``configs/hub/llava-onevision-qwen2-0.5b-ov-hf/config.json`` is loaded as published and only its sizes are
shrunk: the SigLIP tower keeps 384 px crops with 14 px patches (27 x 27 features each), the "full" feature
strategy, the 36 grid pinpoints (384 .. 2304 px), "anyres_max_9", the Qwen2 language model with its tied
embeddings, and the hub format's ``image_token_index`` / ``video_token_index`` (pointed at the project's
character tokenizer, which carries the ``<image>`` / ``<video>`` strings). The published
``preprocessor_config.json`` is copied verbatim.
"""

from __future__ import annotations

from pathlib import Path

from transformers import LlavaOnevisionForConditionalGeneration

from ocr_heads.models.llava_onevision import IMAGE_TOKEN, LLAVA_ONEVISION_CHAT_TEMPLATE
from ocr_heads.models.tiny.build import tiny_builder
from ocr_heads.models.tiny.charset import UNK, build_char_tokenizer
from ocr_heads.models.tiny.hub_configs import published, save_tiny, shrink_decoder, shrink_vit, special_token_ids

CHECKPOINT = "llava-onevision-qwen2-0.5b-ov-hf"
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", IMAGE_TOKEN, "<video>", UNK]
NAMED_TOKENS = {"image_token": IMAGE_TOKEN, "video_token": "<video>"}


def tiny_llava_onevision_config(vocab_size: int, token_ids: dict[str, int], num_layers: int = 3,
                                hidden_size: int = 64, num_heads: int = 4, num_kv_heads: int = 2) -> dict:
    """The published config.json with sizes shrunk and token ids pointed at the character tokenizer."""
    config = published(CHECKPOINT)
    text = config["text_config"]
    shrink_decoder(text, vocab_size, num_layers, hidden_size, num_heads, num_kv_heads)
    text.update(bos_token_id=token_ids["<|endoftext|>"], eos_token_id=token_ids["<|im_end|>"],
                pad_token_id=token_ids["<|endoftext|>"])
    shrink_vit(config["vision_config"])
    config.update(image_token_index=token_ids[IMAGE_TOKEN], video_token_index=token_ids["<video>"])
    return config


@tiny_builder("llava_onevision")
def build_tiny_llava_onevision(out: str | Path, seed: int = 0, **sizes: int) -> Path:
    """Write a tiny random LLaVA-OneVision (model + tokenizer + image processor) to ``out``; same seed, same weights."""
    tokenizer = build_char_tokenizer(SPECIAL_TOKENS, LLAVA_ONEVISION_CHAT_TEMPLATE, NAMED_TOKENS)
    config = tiny_llava_onevision_config(len(tokenizer), special_token_ids(tokenizer, SPECIAL_TOKENS), **sizes)
    return save_tiny(LlavaOnevisionForConditionalGeneration, config, tokenizer, CHECKPOINT, out, seed,
                     "LLaVA-OneVision")
