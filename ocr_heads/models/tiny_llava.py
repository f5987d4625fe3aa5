"""Tiny random LLaVA-OneVision (``--family llava_onevision``): the -hf checkpoints' layout with only sizes shrunk.

Kept from llava-hf/llava-onevision-qwen2-0.5b-ov-hf: a SigLIP tower on 384 px crops with 14 px patches
(27 x 27 features each), the "full" feature strategy, the 36 grid pinpoints (384 .. 2304 px),
"anyres_max_9", a Qwen2 language model, ``<image>``/``<video>`` tokens and the chat format. Shrunk:
layer counts and widths. The tokenizer is the project's character-level one with those special tokens.
"""

from __future__ import annotations

from pathlib import Path

from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration
from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
    LlavaOnevisionImageProcessorPil,
)

from ocr_heads.models.charset import UNK, build_char_tokenizer
from ocr_heads.models.llava_onevision import IMAGE_TOKEN, LLAVA_ONEVISION_CHAT_TEMPLATE
from ocr_heads.models.tiny import _decoder_config, _save_random_model, tiny_builder

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", IMAGE_TOKEN, "<video>", UNK]
NAMED_TOKENS = {"image_token": IMAGE_TOKEN, "video_token": "<video>"}
CROP = 384  # SigLIP-so400m-patch14-384
PINPOINTS = [[h, w] for h in range(CROP, 6 * CROP + 1, CROP) for w in range(CROP, 6 * CROP + 1, CROP)]
MEAN = STD = [0.5, 0.5, 0.5]  # SigLIP normalisation


def tiny_llava_onevision_config(vocab_size: int, token_ids: dict[str, int], num_layers: int = 3,
                                hidden_size: int = 64, num_heads: int = 4, num_kv_heads: int = 2,
                                vision_depth: int = 1, vision_embed_dim: int = 32) -> LlavaOnevisionConfig:
    text_config = {"model_type": "qwen2",
                   **_decoder_config(vocab_size, token_ids, num_layers, hidden_size, num_heads, num_kv_heads)}
    vision_config = {"model_type": "siglip_vision_model", "hidden_size": vision_embed_dim,
                     "intermediate_size": 2 * vision_embed_dim, "num_hidden_layers": vision_depth,
                     "num_attention_heads": 2, "image_size": CROP, "patch_size": 14, "vision_use_head": False}
    return LlavaOnevisionConfig(
        text_config=text_config, vision_config=vision_config, image_token_id=token_ids[IMAGE_TOKEN],
        video_token_id=token_ids["<video>"], vision_feature_select_strategy="full", vision_feature_layer=-1,
        vision_aspect_ratio="anyres_max_9", image_grid_pinpoints=PINPOINTS, tie_word_embeddings=False,
    )


@tiny_builder("llava_onevision")
def build_tiny_llava_onevision(out: str | Path, seed: int = 0, **config_overrides: int) -> Path:
    """Write a tiny random LLaVA-OneVision (model + tokenizer + image processor) to ``out``; same seed, same weights."""
    out = Path(out)
    tokenizer = build_char_tokenizer(SPECIAL_TOKENS, LLAVA_ONEVISION_CHAT_TEMPLATE, NAMED_TOKENS)
    token_ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    config = tiny_llava_onevision_config(len(tokenizer), token_ids, **config_overrides)
    image_processor = LlavaOnevisionImageProcessorPil(
        size={"height": CROP, "width": CROP}, image_grid_pinpoints=PINPOINTS, image_mean=MEAN, image_std=STD,
        do_pad=True, do_convert_rgb=True,
    )
    return _save_random_model(LlavaOnevisionForConditionalGeneration, config, tokenizer, image_processor, out, seed,
                              "LLaVA-OneVision")
