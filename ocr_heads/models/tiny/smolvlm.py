"""Tiny random SmolVLM (``--family smolvlm``) from SmolVLM2-500M-Video-Instruct's published files; ``--family
idefics3``: the same model as an Idefics3 checkpoint (the SmolVLM v1 releases are ``idefics3``).

    python -m ocr_heads.models.tiny --family smolvlm --out models/tiny-smolvlm

The published ``config.json`` (``configs/hub/SmolVLM2-500M-Video-Instruct/``) is loaded as it is, with only sizes
shrunk and token ids pointed at the project's character-level tokenizer (which carries SmolVLM's special-token
strings: ``<fake_token_around_image>``, ``<image>``, ``<global-img>``, ``<row_i_col_j>``, ``<end_of_utterance>``
and its chat format), then read back through ``AutoConfig``. Kept: the 512 px tile, 16 px patches, pixel-shuffle
``scale_factor`` 4 (64 tokens a tile), the processor's ``longest_edge`` 2048, a Llama language model, and the
published quirks (top-level ``use_cache: false``, ``pad_token_id`` outside the text vocabulary, extra text keys).
``preprocessor_config.json`` is copied verbatim (its torchvision ``SmolVLMImageProcessor`` type loads as the
PIL processor here). Weights are random: scores are noise.
"""

from __future__ import annotations

from pathlib import Path

from transformers import Idefics3Config
from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

from ocr_heads.models.smolvlm import (
    END_OF_UTTERANCE,
    FAKE_IMAGE_TOKEN,
    GLOBAL_IMAGE_TOKEN,
    IMAGE_TOKEN,
    SMOLVLM_CHAT_TEMPLATE,
    Idefics3Adapter,
    SmolVLMAdapter,
)
from ocr_heads.models.tiny.build import tiny_builder
from ocr_heads.models.tiny.charset import UNK, build_char_tokenizer
from ocr_heads.models.tiny.hub_configs import (
    published,
    read_back,
    save_random_model,
    save_tiny,
    shrink_decoder,
    shrink_vit,
    special_token_ids,
)

CHECKPOINT = "SmolVLM2-500M-Video-Instruct"
# The tokenizer's 6 x 6 tile tokens (SmolVLM's vocabulary has <row_1_col_1> .. <row_6_col_6>).
ROW_COL_TOKENS = [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
IMAGE_TOKENS = [FAKE_IMAGE_TOKEN, IMAGE_TOKEN, GLOBAL_IMAGE_TOKEN, *ROW_COL_TOKENS]
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", END_OF_UTTERANCE, *IMAGE_TOKENS, UNK]
NAMED_TOKENS = {"fake_image_token": FAKE_IMAGE_TOKEN, "image_token": IMAGE_TOKEN,
                "global_image_token": GLOBAL_IMAGE_TOKEN, "end_of_utterance_token": END_OF_UTTERANCE}
# Processor fields of the published file the PIL processor takes as arguments.
PROCESSOR_FIELDS = ("do_convert_rgb", "do_image_splitting", "do_normalize", "do_pad", "do_rescale", "do_resize",
                    "image_mean", "image_std", "max_image_size", "resample", "rescale_factor", "size")


def shrunk_config(vocab_size: int, token_ids: dict[str, int], num_layers: int = 3, hidden_size: int = 64,
                  num_heads: int = 4, num_kv_heads: int = 2, vision_depth: int = 1,
                  vision_hidden_size: int = 32) -> dict:
    """The published config.json with sizes shrunk and token ids from the tiny tokenizer; geometry untouched."""
    config = published(CHECKPOINT)
    text = config["text_config"]
    shrink_decoder(text, vocab_size, num_layers, hidden_size, num_heads, num_kv_heads, hidden_size // num_heads)
    text.update(bos_token_id=token_ids["<|im_start|>"], eos_token_id=token_ids[END_OF_UTTERANCE],
                pad_token_id=token_ids["<|im_end|>"])
    shrink_vit(config["vision_config"], vision_hidden_size, vision_depth)
    config.update(vocab_size=vocab_size, image_token_id=token_ids[IMAGE_TOKEN], pad_token_id=token_ids["<|im_end|>"])
    return config


def _build(out: str | Path, seed: int, adapter: type, family: str, idefics3: bool, **sizes: int) -> Path:
    tokenizer = build_char_tokenizer(SPECIAL_TOKENS, SMOLVLM_CHAT_TEMPLATE, NAMED_TOKENS, eos_token=END_OF_UTTERANCE,
                                     pad_token="<|im_end|>", bos_token="<|im_start|>")
    token_ids = special_token_ids(tokenizer, SPECIAL_TOKENS)
    config = shrunk_config(len(tokenizer), token_ids, **sizes)
    suppress = [token_ids[t] for t in IMAGE_TOKENS]
    if not idefics3:
        # The processor file as published (SmolVLM's torchvision processor type, its video settings).
        return save_tiny(adapter.model_class, config, tokenizer, CHECKPOINT, out, seed, family, suppress)
    # An Idefics3 checkpoint of the same model: its own model, vision and processor types, the rest as published.
    config = {**config, "model_type": "idefics3", "architectures": ["Idefics3ForConditionalGeneration"],
              "vision_config": {**config["vision_config"], "model_type": "idefics3_vision"}}
    hf_config = read_back(config)
    if not isinstance(hf_config, Idefics3Config):
        raise ValueError(f"expected an Idefics3 config, got {type(hf_config).__name__}")
    processor_file = published(CHECKPOINT, "preprocessor_config.json")
    image_processor = Idefics3ImageProcessorPil(**{k: processor_file[k] for k in PROCESSOR_FIELDS})
    return save_random_model(adapter.model_class, hf_config, tokenizer, image_processor, Path(out), seed, family,
                             suppress_tokens=suppress)


@tiny_builder("smolvlm")
def build_tiny_smolvlm(out: str | Path, seed: int = 0, **sizes: int) -> Path:
    """Tiny random SmolVLM (SmolVLMForConditionalGeneration) from SmolVLM2-500M-Video-Instruct's published files."""
    return _build(out, seed, SmolVLMAdapter, "SmolVLM", idefics3=False, **sizes)


@tiny_builder("idefics3")
def build_tiny_idefics3(out: str | Path, seed: int = 0, **sizes: int) -> Path:
    """The same tiny model as an Idefics3 checkpoint (Idefics3ForConditionalGeneration; SmolVLM v1 layout)."""
    return _build(out, seed, Idefics3Adapter, "Idefics3", idefics3=True, **sizes)
