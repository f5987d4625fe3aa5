"""Tiny random Gemma 3 (``--family gemma3``) from google/gemma-3-4b-it's hub files, with only sizes shrunk.

``configs/hub/gemma-3-4b-it/config.json`` is loaded as published: it names few text keys, so transformers'
``Gemma3TextConfig`` supplies the rest (the 5:1 sliding/global layer pattern from ``sliding_window_pattern``'s
default, 256-wide heads, ``query_pre_attn_scalar``), and the legacy ``rope_scaling`` ("linear", factor 8) goes
through its conversion. Kept: the SigLIP tower on 896 px images with 14 px patches, 256 tokens per image
(``mm_tokens_per_image``), sliding window 1024, tied embeddings, the ``*_token_index`` keys. Shrunk: widths,
heads, vocabulary and depth (6 layers by default: one period of the published pattern, 5 sliding then 1
global). Token ids point at the project's character tokenizer, which carries Gemma 3's special-token strings.
The published ``preprocessor_config.json`` (pan-and-scan fields ``null``) is copied verbatim.
"""

from __future__ import annotations

from pathlib import Path

from transformers import Gemma3ForConditionalGeneration

from ocr_heads.models.gemma3 import BOI, EOI, GEMMA3_CHAT_TEMPLATE, IMAGE_TOKEN
from ocr_heads.models.tiny.build import tiny_builder
from ocr_heads.models.tiny.charset import UNK, build_char_tokenizer
from ocr_heads.models.tiny.hub_configs import (
    published,
    read_back,
    save_tiny,
    shrink_decoder,
    shrink_vit,
    special_token_ids,
)

CHECKPOINT = "gemma-3-4b-it"
SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>", BOI, EOI, IMAGE_TOKEN, UNK]
NAMED_TOKENS = {"boi_token": BOI, "eoi_token": EOI, "image_token": IMAGE_TOKEN}
# The published top-level eos_token_id [1, 106] names these two tokens of Gemma 3's vocabulary.
EOS_TOKENS = ["<eos>", "<end_of_turn>"]


def tiny_gemma3_config(vocab_size: int, token_ids: dict[str, int], num_layers: int = 6, hidden_size: int = 64,
                       num_heads: int = 4, num_kv_heads: int = 2, sliding_window: int | None = None) -> dict:
    """The published config.json with sizes shrunk; ``sliding_window`` overrides the published 1024 (for tests
    that need a window shorter than a prompt)."""
    config = published(CHECKPOINT)
    text = config["text_config"]
    resolved = read_back(config).text_config  # the values the published file leaves to the config class
    head_dim = hidden_size // num_heads
    shrink_decoder(text, vocab_size, num_layers, hidden_size, num_heads, num_kv_heads, head_dim=head_dim)
    # Queries are scaled by query_pre_attn_scalar ** -0.5: keep its published ratio to the head width.
    text["query_pre_attn_scalar"] = head_dim * resolved.query_pre_attn_scalar // resolved.head_dim
    text.update(bos_token_id=token_ids["<bos>"], eos_token_id=[token_ids[t] for t in EOS_TOKENS],
                pad_token_id=token_ids["<pad>"])
    if sliding_window is not None:
        text["sliding_window"] = sliding_window
    shrink_vit(config["vision_config"])
    config.update(boi_token_index=token_ids[BOI], eoi_token_index=token_ids[EOI],
                  image_token_index=token_ids[IMAGE_TOKEN], eos_token_id=[token_ids[t] for t in EOS_TOKENS])
    return config


@tiny_builder("gemma3")
def build_tiny_gemma3(out: str | Path, seed: int = 0, **sizes: int) -> Path:
    """Write a tiny random Gemma 3 (model + tokenizer + image processor) to ``out``; same seed, same weights."""
    tokenizer = build_char_tokenizer(SPECIAL_TOKENS, GEMMA3_CHAT_TEMPLATE, NAMED_TOKENS, eos_token="<eos>",
                                     pad_token="<pad>", bos_token="<bos>")
    config = tiny_gemma3_config(len(tokenizer), special_token_ids(tokenizer, SPECIAL_TOKENS), **sizes)
    return save_tiny(Gemma3ForConditionalGeneration, config, tokenizer, CHECKPOINT, out, seed, "Gemma 3")
