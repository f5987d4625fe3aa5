"""Tiny random Gemma 3 (``--family gemma3``): the google/gemma-3-4b-it layout with only sizes shrunk.

Kept: a SigLIP tower on 896 px images with 14 px patches (64 x 64), 256 tokens per image (4 x 4 average
pooling), the pan-and-scan settings of the processor (off by default, as published), interleaved
sliding-window (1024) and global layers, query_pre_attn_scalar = head_dim, tied embeddings, the
special tokens (<bos>, <start_of_turn>, <start_of_image>, <image_soft_token>, ...) and the chat format.
Shrunk: widths, layer counts (3 layers: sliding, sliding, global, for the published 5:1 pattern).
The tokenizer is the project's character-level one with those special tokens.
"""

from __future__ import annotations

from pathlib import Path

from transformers import Gemma3Config, Gemma3ForConditionalGeneration
from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

from ocr_heads.models.charset import UNK, build_char_tokenizer
from ocr_heads.models.gemma3 import BOI, EOI, GEMMA3_CHAT_TEMPLATE, IMAGE_TOKEN
from ocr_heads.models.tiny import _save_random_model, tiny_builder

SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>", BOI, EOI, IMAGE_TOKEN, UNK]
NAMED_TOKENS = {"boi_token": BOI, "eoi_token": EOI, "image_token": IMAGE_TOKEN}
IMAGE_SIZE = 896
SLIDING_WINDOW = 1024


def tiny_gemma3_config(vocab_size: int, token_ids: dict[str, int], num_layers: int = 3, hidden_size: int = 64,
                       num_heads: int = 4, num_kv_heads: int = 2, vision_depth: int = 1,
                       vision_embed_dim: int = 32, sliding_window: int = SLIDING_WINDOW) -> Gemma3Config:
    head_dim = hidden_size // num_heads
    text_config = {
        "model_type": "gemma3_text", "vocab_size": vocab_size, "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size, "num_hidden_layers": num_layers, "num_attention_heads": num_heads,
        "num_key_value_heads": num_kv_heads, "head_dim": head_dim, "query_pre_attn_scalar": head_dim,
        "sliding_window": sliding_window,
        "layer_types": ["full_attention" if (i + 1) % 3 == 0 else "sliding_attention" for i in range(num_layers)],
        "max_position_embeddings": 131072, "bos_token_id": token_ids["<bos>"],
        "eos_token_id": [token_ids["<eos>"], token_ids["<end_of_turn>"]], "pad_token_id": token_ids["<pad>"],
        "tie_word_embeddings": True,
    }
    vision_config = {"model_type": "siglip_vision_model", "hidden_size": vision_embed_dim,
                     "intermediate_size": 2 * vision_embed_dim, "num_hidden_layers": vision_depth,
                     "num_attention_heads": 2, "image_size": IMAGE_SIZE, "patch_size": 14, "vision_use_head": False}
    return Gemma3Config(
        text_config=text_config, vision_config=vision_config, mm_tokens_per_image=256,
        boi_token_index=token_ids[BOI], eoi_token_index=token_ids[EOI], image_token_index=token_ids[IMAGE_TOKEN],
        tie_word_embeddings=True,
    )


@tiny_builder("gemma3")
def build_tiny_gemma3(out: str | Path, seed: int = 0, **config_overrides: int) -> Path:
    """Write a tiny random Gemma 3 (model + tokenizer + image processor) to ``out``; same seed, same weights."""
    out = Path(out)
    tokenizer = build_char_tokenizer(SPECIAL_TOKENS, GEMMA3_CHAT_TEMPLATE, NAMED_TOKENS, eos_token="<eos>",
                                     pad_token="<pad>", bos_token="<bos>")
    token_ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    config = tiny_gemma3_config(len(tokenizer), token_ids, **config_overrides)
    image_processor = Gemma3ImageProcessorPil(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, image_mean=[0.5] * 3, image_std=[0.5] * 3,
        do_pan_and_scan=False, pan_and_scan_min_crop_size=256, pan_and_scan_max_num_crops=4,
        pan_and_scan_min_ratio_to_activate=1.2,
    )
    return _save_random_model(Gemma3ForConditionalGeneration, config, tokenizer, image_processor, out, seed,
                              "Gemma 3")
