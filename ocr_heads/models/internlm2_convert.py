"""Convert an InternLM2 / InternLM2.5 chat checkpoint (remote code) to transformers' native ``LlamaForCausalLM``.

    python -m ocr_heads.models.internlm2_convert --model_id internlm/internlm2_5-7b-chat --out models/internlm2_5-native

The same conversion InternVL2's language model goes through (:mod:`ocr_heads.models.internvl2_convert`, which
holds the shared rules): the config becomes a Llama config of the same widths, rope and token ids; ``wqkv`` is
split into q / k / v in Llama's GQA order; the other weights are renamed; the tokenizer keeps every special token
at its declared id and the checkpoint's own chat template. No remote code runs. ``--model_id`` of any command
converts once into a cache (keyed by the source's files, so a rebuilt source is converted again).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import sys
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ocr_heads.core.commandline import Parser, run_cli, setup_logging
from ocr_heads.core.paths import model_name
from ocr_heads.models.internvl2_convert import (
    INTERNLM2_DECODER_RENAMES,
    cache_root,
    convert_tokenizer,
    internlm2_llama_config,
    load_safetensors,
    source_dir,
    split_wqkv,
)
from ocr_heads.models.text_lm import TextLMAdapter

logger = logging.getLogger(__name__)

DONE_MARKER = "ocr_heads_conversion.json"  # written last: a directory without it is unfinished
# A plain InternLM2ForCausalLM: "model." prefix on the decoder, "output." for the LM head.
TOP_RENAMES = [(r"^output\.", "lm_head.")]


def convert_config(source: dict) -> LlamaConfig:
    """Native Llama config from an InternLM2 ``config.json``."""
    if source.get("model_type") != "internlm2":
        raise ValueError(f"model_type {source.get('model_type')!r} is not an InternLM2 checkpoint")
    config = LlamaConfig(**internlm2_llama_config(source))
    config.architectures = ["LlamaForCausalLM"]
    return config


def convert_state_dict(weights: dict[str, torch.Tensor], config: LlamaConfig) -> dict[str, torch.Tensor]:
    """Llama weights from InternLM2 ones (a new dict; tensors are reused, not copied)."""
    converted = {}
    for key, tensor in weights.items():
        name = key
        for pattern, replacement in TOP_RENAMES + INTERNLM2_DECODER_RENAMES:
            name = re.sub(pattern, replacement, name)
        if ".self_attn.wqkv." in name:
            parts = split_wqkv(tensor, config.num_attention_heads, config.num_key_value_heads)
            for part, chunk in zip(("q_proj", "k_proj", "v_proj"), parts, strict=True):
                converted[name.replace(".wqkv.", f".{part}.")] = chunk
        else:
            converted[name] = tensor
    return converted


def convert(source: Path, out: Path) -> Path:
    """Convert the InternLM2 checkpoint in ``source`` into a native Llama one in ``out`` (renamed into place last)."""
    source_config = json.loads((source / "config.json").read_text())
    config = convert_config(source_config)
    if source_config.get("ocr_heads_random_weights"):  # a random fixture stays labelled as noise once converted
        config.ocr_heads_random_weights = True
    tokenizer = convert_tokenizer(source, internvl2=False)
    if not tokenizer.chat_template:
        raise ValueError(f"{source}: tokenizer_config.json has no chat_template")
    weights = convert_state_dict(load_safetensors(source), config)
    dtype = next(iter(weights.values())).dtype
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(weights)), sorted(set(weights) - expected)
    if missing or unexpected:
        raise ValueError(f"conversion mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.load_state_dict({k: v.to(dtype) for k, v in weights.items()}, strict=True, assign=True)
    # The chat model ends its turn with <|im_end|>; </s> ends the sequence.
    stops = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.eos_token_id]
    model.generation_config.eos_token_id = [t for t in stops if t is not None]
    model.generation_config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[-1]
    model.generation_config.do_sample = False
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    (partial / DONE_MARKER).write_text(json.dumps({"source": str(source), "converter": __name__}, indent=1) + "\n")
    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)
    logger.info("wrote the native Llama checkpoint of %s to %s", source, out)
    return out


def source_key(source: Path) -> str:
    """A short hash of the source's files (names, sizes, modification times): a rebuilt source gets a new cache."""
    digest = hashlib.sha256(str(source.resolve()).encode())
    for file in sorted(source.iterdir()):
        if file.is_file():
            stat = file.stat()
            digest.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:12]


def converted_checkpoint(model_id: str, cache_dir: Path | None = None) -> Path:
    """The native conversion of ``model_id`` (local dir or hub id), converted on first use and cached."""
    source = source_dir(model_id)
    target = (cache_dir or cache_root()) / f"{model_id.strip('/').replace('/', '--')}-{source_key(source)}"
    if (target / DONE_MARKER).is_file():
        return target
    logger.info("converting %s to the native Llama layout in %s (once)", model_id, target)
    return convert(source, target)


def load_internlm2(model_id: str, **kwargs) -> TextLMAdapter:
    """InternLM2 remote-code checkpoint: converted once to the native layout (cached), then loaded natively."""
    adapter = TextLMAdapter(str(converted_checkpoint(model_id)), **kwargs)
    adapter.name = model_name(model_id)  # files are named after the id, not the cache dir
    return adapter


def main(argv: list[str] | None = None) -> int:
    parser = Parser(
        description="Convert an InternLM2 / InternLM2.5 chat checkpoint (remote code, e.g. "
        "internlm/internlm2_5-7b-chat) into transformers' native LlamaForCausalLM layout. Reads config.json, the "
        "safetensors weights and the tokenizer files; runs no remote code.",
        epilog="Writes OUT with save_pretrained (config.json, weights, tokenizer with the checkpoint's chat "
        "template) and ocr_heads_conversion.json last. Without --out the conversion goes to the cache every "
        "script uses ($OCR_HEADS_CACHE/converted, default ~/.cache/ocr_heads/converted).",
    )
    parser.add_argument("--model_id", required=True, help="InternLM2 hub id or local directory")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: the cache)")
    args = parser.parse_args(argv)
    setup_logging()
    return run_cli(lambda: print(converted_checkpoint(args.model_id) if args.out is None
                                 else convert(source_dir(args.model_id), args.out)))


if __name__ == "__main__":
    sys.exit(main())
