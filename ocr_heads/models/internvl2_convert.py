"""Convert an InternVL2 hub checkpoint (remote code: InternViT + InternLM2) to transformers' native InternVL.

    python -m ocr_heads.models.internvl2_convert --model_id OpenGVLab/InternVL2-8B --out models/InternVL2-8B-native

The hub checkpoint ships its own modeling code, which current transformers does not import cleanly and
whose attention our capture and interventions cannot reach. Its weights, though, map one to one onto
``InternVLForConditionalGeneration`` with a Llama language model:

- InternLM2's fused ``wqkv`` rows are laid out per key/value head as ``[q_0 .. q_{g-1}, k, v]``
  (``g`` query heads share one kv head); they split into ``q_proj`` / ``k_proj`` / ``v_proj`` with
  query head ``h * g + j`` = the ``j``-th query of kv head ``h``, which is exactly Llama's GQA order.
  ``wo``, ``w1``/``w3``/``w2`` and the norms are renamed.
- InternViT's fused ``qkv`` is ``[q; k; v]``; ``ls1``/``ls2`` are the layer scales; ``mlp1`` is the
  projector (LayerNorm, Linear, GELU, Linear). The pixel shuffle must be InternVL2's ``v2``, which is
  what the native model does.

Only the weights' safetensors, ``config.json`` and the tokenizer files are read: no remote code runs.
The result is saved with ``save_pretrained`` (model, tokenizer with an InternVL2 chat template,
GotOcr2 image processor with InternVL2's tiling) and loads through the native adapter.
:func:`converted_checkpoint` converts a hub id once into a cache directory, which is how
``--model_id OpenGVLab/InternVL2-8B`` works in every script.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import InternVLConfig, InternVLForConditionalGeneration, PreTrainedTokenizerFast
from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

from ocr_heads.core.commandline import Parser
from ocr_heads.core.paths import model_name
from ocr_heads.models.internvl import (
    CONTEXT_IMAGE,
    END_IMAGE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    START_IMAGE,
    InternVLAdapter,
)

logger = logging.getLogger(__name__)

DONE_MARKER = "ocr_heads_conversion.json"  # written last: a directory without it is an unfinished conversion
# InternVL2's "internlm2-chat" conversation (its chat() uses it): a default system turn, turns joined by
# <|im_end|> without a newline. Images are <IMG_CONTEXT> placeholders, expanded by the adapter.
INTERNVL2_SYSTEM = ("你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，"
                    "英文名叫InternVL, 是一个有用无害的人工智能助手。")
INTERNVL2_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\n" + INTERNVL2_SYSTEM + "<|im_end|>{% endif %}"
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}" + CONTEXT_IMAGE + "\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Renames applied in order to every key; qkv / wqkv are split afterwards.
VISION_RENAMES = [
    (r"^vision_model\.", "model.vision_tower."),
    (r"\.embeddings\.class_embedding$", ".embeddings.cls_token"),
    (r"\.embeddings\.patch_embedding\.", ".embeddings.patch_embeddings.projection."),
    (r"\.embeddings\.position_embedding$", ".embeddings.position_embeddings"),
    (r"\.encoder\.layers\.", ".encoder.layer."),
    (r"\.attn\.proj\.", ".attention.projection_layer."),
    (r"\.attn\.", ".attention."),  # qkv, q_norm, k_norm
    (r"\.ls(\d)$", r".lambda_\1"),
    (r"\.norm1\.", ".layernorm_before."),
    (r"\.norm2\.", ".layernorm_after."),
]
PROJECTOR_RENAMES = [
    (r"^mlp1\.0\.", "model.multi_modal_projector.layer_norm."),
    (r"^mlp1\.1\.", "model.multi_modal_projector.linear_1."),
    (r"^mlp1\.3\.", "model.multi_modal_projector.linear_2."),
]
# InternLM2's decoder names -> Llama's (the same inside InternVL2 and in a plain InternLM2 checkpoint).
INTERNLM2_DECODER_RENAMES = [
    (r"\.tok_embeddings\.", ".embed_tokens."),
    (r"\.attention\.wo\.", ".self_attn.o_proj."),
    (r"\.attention\.wqkv\.", ".self_attn.wqkv."),  # split below
    (r"\.feed_forward\.w1\.", ".mlp.gate_proj."),
    (r"\.feed_forward\.w3\.", ".mlp.up_proj."),
    (r"\.feed_forward\.w2\.", ".mlp.down_proj."),
    (r"\.attention_norm\.", ".input_layernorm."),
    (r"\.ffn_norm\.", ".post_attention_layernorm."),
]
INTERNLM2_RENAMES = [
    (r"^language_model\.output\.", "lm_head."),
    (r"^language_model\.model\.", "model.language_model."),
    *INTERNLM2_DECODER_RENAMES,
]


# -- config ---------------------------------------------------------------------------------------------


def _rope_parameters(llm: dict) -> dict:
    scaling = llm.get("rope_scaling") or {}
    kind = scaling.get("type") or scaling.get("rope_type") or "default"
    if kind not in ("default", "dynamic", "linear"):
        raise ValueError(f"InternLM2 rope_scaling {scaling} has no native counterpart here")
    params = {"rope_type": kind, "rope_theta": float(llm.get("rope_theta", 10000.0))}
    if kind != "default":
        params["factor"] = float(scaling["factor"])
    return params


def internlm2_llama_config(llm: dict) -> dict:
    """The native Llama config (a dict) of an InternLM2 config: the same widths, rope and token ids. InternLM2's
    decoder is Llama's with fused ``wqkv`` weights, so only the weights need more than renaming."""
    heads = llm["num_attention_heads"]
    heads = llm["num_attention_heads"]
    return {
        "model_type": "llama",
        "vocab_size": llm["vocab_size"],
        "hidden_size": llm["hidden_size"],
        "intermediate_size": llm["intermediate_size"],
        "num_hidden_layers": llm["num_hidden_layers"],
        "num_attention_heads": heads,
        "num_key_value_heads": llm.get("num_key_value_heads", heads),
        "head_dim": llm["hidden_size"] // heads,
        "hidden_act": llm.get("hidden_act", "silu"),
        "max_position_embeddings": llm["max_position_embeddings"],
        "rms_norm_eps": llm.get("rms_norm_eps", 1e-6),
        "rope_parameters": _rope_parameters(llm),
        "attention_bias": bool(llm.get("bias", False)),
        "mlp_bias": False,
        "bos_token_id": llm.get("bos_token_id"),
        "eos_token_id": llm.get("eos_token_id"),
        "pad_token_id": llm.get("pad_token_id"),
        "tie_word_embeddings": bool(llm.get("tie_word_embeddings", False)),
    }


def convert_config(source: dict, image_token_id: int) -> InternVLConfig:
    """Native config from an InternVL2 ``config.json`` (InternLM2 language model only)."""
    llm, vision = source["llm_config"], source["vision_config"]
    architecture = (llm.get("architectures") or [""])[0]
    if architecture != "InternLM2ForCausalLM":
        raise ValueError(f"language model {architecture or llm.get('model_type')!r}: only InternLM2 (InternVL2-2B/8B/"
                         "26B) is converted here; use an InternVL -hf checkpoint for the others")
    if source.get("ps_version", "v1") != "v2":
        raise ValueError(f"ps_version {source.get('ps_version')!r}: the native pixel shuffle is InternVL2's 'v2'")
    if not source.get("use_thumbnail", True):
        raise ValueError("use_thumbnail is off; the native image processor always adds a thumbnail")
    image_size = int(source.get("force_image_size") or vision["image_size"])
    if image_size != int(vision["image_size"]):
        raise ValueError(f"force_image_size {image_size} differs from the vision tower's {vision['image_size']}")
    text_config = internlm2_llama_config(llm)
    vision_config = {
        "hidden_size": vision["hidden_size"],
        "intermediate_size": vision["intermediate_size"],
        "num_hidden_layers": vision["num_hidden_layers"],
        "num_attention_heads": vision["num_attention_heads"],
        "image_size": image_size,
        "patch_size": vision["patch_size"],
        "hidden_act": vision.get("hidden_act", "gelu"),
        "norm_type": vision.get("norm_type", "layer_norm"),
        "layer_norm_eps": vision.get("layer_norm_eps", 1e-6),
        "attention_bias": bool(vision.get("qkv_bias", True)),
        "use_qk_norm": bool(vision.get("qk_normalization", False)),
        "layer_scale_init_value": vision.get("initializer_factor", 0.1),
        "use_mean_pooling": True,  # no final norm after InternViT's last layer
        "use_absolute_position_embeddings": True,
    }
    downsample = float(source.get("downsample_ratio", 0.5))
    return InternVLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=image_token_id,
        image_seq_length=int((image_size // vision["patch_size"] * downsample) ** 2),
        downsample_ratio=downsample,
        projector_hidden_act="gelu",
        vision_feature_layer=int(source.get("select_layer", -1)),
        vision_feature_select_strategy="default",  # drop the CLS token, as InternVL2's extract_feature does
        tie_word_embeddings=text_config["tie_word_embeddings"],
    )


# -- weights --------------------------------------------------------------------------------------------


def _rename(key: str) -> str:
    if key.startswith("vision_model."):
        rules = VISION_RENAMES
    elif key.startswith("mlp1."):
        rules = PROJECTOR_RENAMES
    elif key.startswith("language_model."):
        rules = INTERNLM2_RENAMES
    else:
        raise ValueError(f"unexpected weight {key!r} in an InternVL2 checkpoint")
    for pattern, replacement in rules:
        key = re.sub(pattern, replacement, key)
    return key


def split_wqkv(wqkv: torch.Tensor, num_heads: int, num_kv_heads: int) -> tuple[torch.Tensor, ...]:
    """InternLM2's fused rows ``(kv_heads, groups + 2, head_dim)`` -> q (heads*dim), k and v (kv_heads*dim)."""
    groups = num_heads // num_kv_heads
    head_dim = wqkv.shape[0] // (num_kv_heads * (groups + 2))
    fused = wqkv.reshape(num_kv_heads, groups + 2, head_dim, *wqkv.shape[1:])
    q, k, v = fused[:, :groups], fused[:, -2], fused[:, -1]
    return tuple(t.reshape(-1, *wqkv.shape[1:]).contiguous() for t in (q, k, v))


def convert_state_dict(weights: dict[str, torch.Tensor], config: InternVLConfig) -> dict[str, torch.Tensor]:
    """Native weights from InternVL2 ones (a new dict; the input's tensors are reused, not copied)."""
    text = config.text_config
    converted = {}
    for key, tensor in weights.items():
        name = _rename(key)
        if ".attention.qkv." in name:  # InternViT: [q; k; v]
            for part, chunk in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3, dim=0), strict=True):
                converted[name.replace(".qkv.", f".{part}.")] = chunk.contiguous()
        elif ".self_attn.wqkv." in name:
            parts = split_wqkv(tensor, text.num_attention_heads, text.num_key_value_heads)
            for part, chunk in zip(("q_proj", "k_proj", "v_proj"), parts, strict=True):
                converted[name.replace(".wqkv.", f".{part}.")] = chunk
        else:
            converted[name] = tensor
    return converted


def load_safetensors(directory: Path) -> dict[str, torch.Tensor]:
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{directory}: no *.safetensors weights (only safetensors checkpoints are converted)")
    weights: dict[str, torch.Tensor] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 (safe_open is not a dict)
                weights[key] = handle.get_tensor(key)
    return weights


# -- tokenizer ------------------------------------------------------------------------------------------


def _added_tokens(source: Path) -> dict[str, int]:
    """Special tokens and their ids as the source's ``tokenizer_config.json`` declares them."""
    config = json.loads((source / "tokenizer_config.json").read_text())
    return {entry["content"]: int(i) for i, entry in config.get("added_tokens_decoder", {}).items()}


def convert_tokenizer(source: Path, internvl2: bool = True) -> PreTrainedTokenizerFast:
    """A tokenizer that loads without remote code, with InternVL2's image tokens named and its chat template
    (``internvl2=False``, a plain InternLM2 chat model: no image tokens, the checkpoint's own chat template).

    ``tokenizer.json`` is used when the checkpoint has one; otherwise InternLM2's sentencepiece model is
    read as a Llama tokenizer without a prefix space (what transformers did for InternVL2.5's InternLM2.5).
    Every special token must keep the id the checkpoint declares, or the conversion stops.
    """
    config = json.loads((source / "tokenizer_config.json").read_text())
    specials = {key: config[key] for key in ("bos_token", "eos_token", "unk_token", "pad_token") if config.get(key)}
    specials = {key: value["content"] if isinstance(value, dict) else value for key, value in specials.items()}
    # Named, as InternVLProcessor reads them (tokenizer.start_image_token, ...).
    if internvl2:
        specials["extra_special_tokens"] = {"start_image_token": START_IMAGE, "end_image_token": END_IMAGE,
                                            "context_image_token": CONTEXT_IMAGE}
    if (source / "tokenizer.json").is_file():
        tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(source / "tokenizer.json"), **specials)
    elif (source / "tokenizer.model").is_file():
        from transformers import LlamaTokenizer

        tokenizer = LlamaTokenizer.from_pretrained(str(source), add_prefix_space=False, legacy=False, **specials)
    else:
        raise FileNotFoundError(f"{source}: neither tokenizer.json nor tokenizer.model")
    declared = _added_tokens(source)
    wrong = {token: (tokenizer.convert_tokens_to_ids(token), i) for token, i in declared.items()
             if tokenizer.convert_tokens_to_ids(token) != i}
    if wrong:
        raise ValueError(f"converted tokenizer moved special tokens (token: (ours, declared)): {wrong}")
    tokenizer.chat_template = INTERNVL2_CHAT_TEMPLATE if internvl2 else config.get("chat_template")
    return tokenizer


# -- the whole checkpoint -------------------------------------------------------------------------------


def convert(source: Path, out: Path, dtype: torch.dtype | None = None) -> Path:
    """Convert the InternVL2 checkpoint in ``source`` into a native one in ``out`` (written last-step-atomic)."""
    source_config = json.loads((source / "config.json").read_text())
    if source_config.get("model_type") != "internvl_chat":
        raise ValueError(f"{source}: model_type {source_config.get('model_type')!r} is not an InternVL2 checkpoint")
    tokenizer = convert_tokenizer(source)
    image_token_id = tokenizer.convert_tokens_to_ids(CONTEXT_IMAGE)
    if image_token_id is None or image_token_id == tokenizer.unk_token_id:
        raise ValueError(f"{source}: the tokenizer has no {CONTEXT_IMAGE} token")
    config = convert_config(source_config, image_token_id)
    config.architectures = ["InternVLForConditionalGeneration"]
    if source_config.get("ocr_heads_random_weights"):  # a random fixture stays labelled as noise once converted
        config.ocr_heads_random_weights = True
    logger.info("reading the InternVL2 weights from %s", source)
    weights = convert_state_dict(load_safetensors(source), config)
    dtype = dtype or next(iter(weights.values())).dtype
    # Built on the meta device and filled by assignment: the weights are never held twice.
    with torch.device("meta"):
        model = InternVLForConditionalGeneration(config)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(weights)), sorted(set(weights) - expected)
    if missing or unexpected:
        raise ValueError(f"conversion mismatch: missing {missing[:5]}..., unexpected {unexpected[:5]}...")
    model.load_state_dict({k: v.to(dtype) for k, v in weights.items()}, strict=True, assign=True)
    stops = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.eos_token_id]
    model.generation_config.eos_token_id = [t for t in stops if t is not None]
    model.generation_config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[-1]
    model.generation_config.do_sample = False
    image_processor = GotOcr2ImageProcessorPil(
        size={"height": config.vision_config.image_size[0], "width": config.vision_config.image_size[1]},
        image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD,
        min_patches=int(source_config.get("min_dynamic_patch", 1)),
        max_patches=int(source_config.get("max_dynamic_patch", 12)) if source_config.get("dynamic_image_size", True)
        else 1,
    )
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    image_processor.save_pretrained(partial)
    (partial / DONE_MARKER).write_text(json.dumps({"source": str(source), "converter": __name__}, indent=1) + "\n")
    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)
    logger.info("wrote the native InternVL checkpoint to %s", out)
    return out


def cache_root() -> Path:
    return Path(os.environ.get("OCR_HEADS_CACHE", Path.home() / ".cache" / "ocr_heads")) / "converted"


def converted_checkpoint(model_id: str, cache_dir: Path | None = None) -> Path:
    """The native conversion of ``model_id`` (local dir or hub id), converted on first use and cached."""
    target = (cache_dir or cache_root()) / model_id.strip("/").replace("/", "--")
    if (target / DONE_MARKER).is_file():
        return target
    logger.info("converting %s to the native InternVL layout in %s (once)", model_id, target)
    return convert(source_dir(model_id), target)


def source_dir(model_id: str) -> Path:
    """A local directory as is; a hub id downloaded (config, safetensors, tokenizer files; never code)."""
    if Path(model_id).is_dir():
        return Path(model_id)
    from huggingface_hub import snapshot_download

    logger.info("downloading %s (weights, config, tokenizer; no code)", model_id)
    return Path(snapshot_download(model_id, allow_patterns=["*.json", "*.safetensors", "tokenizer.model"]))


def load_internvl2(model_id: str, **kwargs) -> InternVLAdapter:
    """InternVL2 remote-code checkpoint: converted once to the native layout (cached), then loaded natively."""
    adapter = InternVLAdapter(str(converted_checkpoint(model_id)), **kwargs)
    adapter.name = model_name(model_id)  # files are named after the id, not the cache dir
    return adapter



def main(argv: list[str] | None = None) -> int:
    parser = Parser(
        description="Convert an InternVL2 checkpoint (remote code: InternViT + InternLM2, e.g. OpenGVLab/InternVL2-8B) "
        "into transformers' native InternVLForConditionalGeneration layout. Reads config.json, the safetensors "
        "weights and the tokenizer files (downloaded for a hub id); runs no remote code.",
        epilog="Writes OUT with save_pretrained: config.json, model safetensors, tokenizer (InternVL2 chat template), "
        "preprocessor_config.json (448 px tiles, InternVL2's max tiles), and ocr_heads_conversion.json last. "
        "Without --out the conversion goes to the cache that --model_id OpenGVLab/InternVL2-8B uses in every "
        "script ($OCR_HEADS_CACHE/converted, default ~/.cache/ocr_heads/converted).",
    )
    parser.add_argument("--model_id", required=True, help="InternVL2 hub id or local directory")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: the cache)")
    parser.add_argument("--dtype", default=None, help="torch dtype of the saved weights (default: as stored)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.out is None:
            out = converted_checkpoint(args.model_id)
        else:
            out = convert(source_dir(args.model_id), args.out, getattr(torch, args.dtype) if args.dtype else None)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
