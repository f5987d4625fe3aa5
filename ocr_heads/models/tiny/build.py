"""Build tiny random checkpoints of every supported family, for offline tests and the demo.

Qwen2-VL is built from a config written here; InternVL3/3.5 (below), the later Qwen families
(:mod:`ocr_heads.models.tiny.qwen`), LLaVA-OneVision and Gemma 3 from the published hub files in
``configs/hub`` with only sizes shrunk (:mod:`ocr_heads.models.tiny.hub_configs`).

    python -m ocr_heads.models.tiny --out models/tiny-qwen2-vl
    python -m ocr_heads.models.tiny --family internvl --out models/tiny-internvl
    python -m ocr_heads.models.tiny --out models/tiny-qwen2-vl-bpe --vocab qwen2   # the real Qwen2 vocabulary

The result is saved with ``save_pretrained`` (model, tokenizer, image-processor config), so the
rest of the project loads it through exactly the same ``from_pretrained`` path as a hub
checkpoint. A random model has no OCR heads: its scores are noise and must never be read as
findings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from transformers import InternVLForConditionalGeneration, Qwen2VLConfig, Qwen2VLForConditionalGeneration
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from ocr_heads.core.commandline import Parser, positive_int, run_cli, setup_logging
from ocr_heads.core.registry import Registry
from ocr_heads.models.internvl import (
    CONTEXT_IMAGE,
    END_IMAGE,
    INTERNVL_CHAT_TEMPLATE,
    START_IMAGE,
)
from ocr_heads.models.qwen2_vl import MAX_PIXELS, MIN_PIXELS, QWEN2_VL_CHAT_TEMPLATE
from ocr_heads.models.tiny.charset import UNK, build_char_tokenizer
from ocr_heads.models.tiny.hub_configs import (
    published,
    save_random_model,
    save_tiny,
    shrink_decoder,
    shrink_vit,
    special_token_ids,
)

logger = logging.getLogger(__name__)

# family name -> builder(out, seed=..., **config_overrides) -> Path; every module of this package that builds a
# family registers it with @tiny_builder (found on the first lookup, no list of modules).
_BUILDERS: Registry[Callable[..., Path]] = Registry("tiny builder", __name__.rpartition(".")[0])


def tiny_builder(family: str, text_only: bool = False) -> Callable[[Callable[..., Path]], Callable[..., Path]]:
    """Register a builder; ``text_only``: its model is a language model without a vision tower."""
    register = _BUILDERS.register(family)

    def decorate(builder: Callable[..., Path]) -> Callable[..., Path]:
        builder.text_only = text_only
        return register(builder)

    return decorate


def builders() -> dict[str, Callable[..., Path]]:
    """Every registered tiny builder, by family name."""
    return _BUILDERS.all()


def page_families() -> list[str]:
    """The tiny families whose models read pages (all but the text-only language models), sorted."""
    return sorted(name for name, builder in builders().items() if not getattr(builder, "text_only", False))


def _decoder_config(vocab_size: int, token_ids: dict[str, int], num_layers: int, hidden_size: int, num_heads: int,
                    num_kv_heads: int) -> dict:
    """The tiny language decoder both families share (Qwen2-style: GQA, untied embeddings)."""
    return {
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_kv_heads,
        "max_position_embeddings": 65536,
        "bos_token_id": token_ids["<|im_start|>"],
        "eos_token_id": token_ids["<|im_end|>"],
        "pad_token_id": token_ids["<|endoftext|>"],
        "tie_word_embeddings": False,
    }


def tiny_qwen2_vl_config(
    vocab_size: int,
    token_ids: dict[str, int],
    num_layers: int = 3,
    hidden_size: int = 64,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    vision_depth: int = 1,
    vision_embed_dim: int = 32,
) -> Qwen2VLConfig:
    head_dim = hidden_size // num_heads
    # M-RoPE splits head_dim/2 rotary frequencies into (temporal, height, width) sections.
    half = head_dim // 2
    mrope_section = [half - 2 * (half // 3), half // 3, half // 3]
    text_config = {
        **_decoder_config(vocab_size, token_ids, num_layers, hidden_size, num_heads, num_kv_heads),
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope_section},
    }
    vision_config = {
        "depth": vision_depth,
        "embed_dim": vision_embed_dim,
        "hidden_size": hidden_size,
        "num_heads": 2,
        "mlp_ratio": 2,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }
    return Qwen2VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=token_ids["<|image_pad|>"],
        video_token_id=token_ids["<|video_pad|>"],
        vision_start_token_id=token_ids["<|vision_start|>"],
        vision_end_token_id=token_ids["<|vision_end|>"],
    )


@tiny_builder("qwen2_vl")
def build_tiny_qwen2_vl(out: str | Path, seed: int = 0, vocab: str = "char", **config_overrides: int) -> Path:
    """Write a tiny random Qwen2-VL (model + tokenizer + image processor) to ``out``; same seed, same weights.

    ``vocab="qwen2"`` uses the real Qwen2 vocabulary with the published special-token ids (fetched once,
    see :mod:`ocr_heads.models.tiny.qwen2_vocab`; raises VocabUnavailable when it cannot be had).
    """
    out = Path(out)
    tokenizer = _qwen2_tokenizer() if vocab == "qwen2" else build_char_tokenizer()
    token_ids = {token: tokenizer.convert_tokens_to_ids(token) for token in tokenizer.all_special_tokens}
    token_ids.update({t: tokenizer.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|video_pad|>")})
    config = tiny_qwen2_vl_config(len(tokenizer), token_ids, **config_overrides)
    image_processor = Qwen2VLImageProcessorPil(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    return save_random_model(Qwen2VLForConditionalGeneration, config, tokenizer, image_processor, out, seed,
                             "Qwen2-VL")


def _qwen2_tokenizer():
    from transformers import AutoTokenizer

    from ocr_heads.models.tiny.qwen2_vocab import qwen2_tokenizer_dir

    tokenizer = AutoTokenizer.from_pretrained(qwen2_tokenizer_dir())
    tokenizer.chat_template = QWEN2_VL_CHAT_TEMPLATE
    return tokenizer


# InternVL: the special tokens of InternVL -hf tokenizers (names as in the real ones; ids are ours).
INTERNVL_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", START_IMAGE, END_IMAGE, CONTEXT_IMAGE, UNK]
INTERNVL_NAMED_TOKENS = {"start_image_token": START_IMAGE, "end_image_token": END_IMAGE,
                         "context_image_token": CONTEXT_IMAGE}
# language model -> the published -hf checkpoint whose files the tiny model is built from (configs/hub):
# InternVL3 -hf checkpoints use Qwen2 language models, InternVL3.5 -hf ones (1B-38B dense) Qwen3.
INTERNVL_CHECKPOINTS = {"qwen2": "InternVL3-1B-hf", "qwen3": "InternVL3_5-1B-HF"}
INTERNVL_LANGUAGE_MODELS = tuple(INTERNVL_CHECKPOINTS)


def tiny_internvl_config(vocab_size: int, token_ids: dict[str, int], num_layers: int = 3, hidden_size: int = 64,
                         num_heads: int = 4, num_kv_heads: int = 2, language_model: str = "qwen3") -> dict:
    """The published InternVL3.5 (``"qwen3"``) or InternVL3 (``"qwen2"``) -hf ``config.json`` with sizes shrunk."""
    if language_model not in INTERNVL_CHECKPOINTS:
        raise ValueError(f"InternVL language model must be one of {INTERNVL_LANGUAGE_MODELS}, not {language_model!r}")
    config = published(INTERNVL_CHECKPOINTS[language_model])
    text = config["text_config"]
    shrink_decoder(text, vocab_size, num_layers, hidden_size, num_heads, num_kv_heads)
    text.update(bos_token_id=token_ids["<|endoftext|>"], eos_token_id=token_ids["<|im_end|>"],
                pad_token_id=token_ids["<|endoftext|>"])
    shrink_vit(config["vision_config"])
    config["image_token_id"] = token_ids[CONTEXT_IMAGE]
    return config


@tiny_builder("internvl")
def build_tiny_internvl(out: str | Path, seed: int = 0, language_model: str = "qwen3", **sizes: int) -> Path:
    """Write a tiny random native InternVL3.5 (model + tokenizer + image processor) to ``out``, from
    InternVL3_5-1B-HF's published files; same seed, same weights. ``language_model="qwen2"`` builds an InternVL3
    (from InternVL3-1B-hf's files) instead."""
    tokenizer = build_char_tokenizer(INTERNVL_SPECIAL_TOKENS, INTERNVL_CHAT_TEMPLATE, INTERNVL_NAMED_TOKENS)
    ids = special_token_ids(tokenizer, INTERNVL_SPECIAL_TOKENS)
    config = tiny_internvl_config(len(tokenizer), ids, language_model=language_model, **sizes)
    return save_tiny(InternVLForConditionalGeneration, config, tokenizer, INTERNVL_CHECKPOINTS[language_model], out,
                     seed, "InternVL")


def main(argv: list[str] | None = None) -> int:
    parser = Parser(
        description="Build a tiny random checkpoint of a model family (model, char tokenizer, image processor) "
        "from the family's published config.json / preprocessor_config.json (configs/hub) with only sizes shrunk "
        "(qwen2_vl: a config written here; `python -m ocr_heads.models.hub_fixture` builds Qwen2-VL-2B/7B and "
        "InternVL2-8B from their published files), and save it with save_pretrained. No network. "
        "Its scores are noise.",
    )
    parser.add_argument("--out", required=True, help="output directory (created)")
    parser.add_argument("--family", default="qwen2_vl", choices=sorted(builders()), help="model family")
    parser.add_argument("--seed", type=int, default=0, help="weight-init seed (same seed, same weights)")
    # Sizes default to each family's own tiny defaults (3 layers, 4 heads, 2 kv heads, hidden 64; Qwen3.5: 8 layers).
    parser.add_argument("--layers", type=positive_int, default=None, help="decoder layers")
    parser.add_argument("--heads", type=positive_int, default=None, help="attention heads per layer")
    parser.add_argument("--kv-heads", type=positive_int, default=None, help="key/value heads (GQA)")
    parser.add_argument("--hidden", type=positive_int, default=None, help="hidden size")
    parser.add_argument("--vocab", default="char", choices=("char", "qwen2"),
                        help="char: the project's character tokenizer (no network); qwen2: the real Qwen2 "
                        "vocabulary with the published special-token ids (qwen2_vl only; fetched once from PyPI's "
                        "dashscope wheel and cached under $OCR_HEADS_CACHE)")
    args = parser.parse_args(argv)
    if args.vocab != "char" and args.family != "qwen2_vl":
        parser.error(f"--vocab {args.vocab} is for --family qwen2_vl")
    setup_logging()
    sizes = {"num_layers": args.layers, "num_heads": args.heads, "num_kv_heads": args.kv_heads,
             "hidden_size": args.hidden}
    extra = {"vocab": args.vocab} if args.vocab != "char" else {}
    # VocabUnavailable is a UserError: run_cli prints it as one error line.
    return run_cli(lambda: builders()[args.family](
        args.out, seed=args.seed, **{k: v for k, v in sizes.items() if v is not None}, **extra) and 0)
