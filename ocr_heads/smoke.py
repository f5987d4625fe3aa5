"""Full-size architecture smoke run (``make smoke``): Qwen2-VL-2B-Instruct's real shapes, random weights.

    python -m ocr_heads.smoke [--out DIR]

Builds the model from ``configs/Qwen2-VL-2B-Instruct.json`` (architecture numbers only; token ids are
the project's char tokenizer's) in bf16 on the CPU, saves it with ``save_pretrained``, renders one
small passkey sample and runs step2 (image, with ``--verify-eager``, and text) end to end with a
short generation. It proves shapes, GQA (12 query / 2 kv heads), M-RoPE and page geometry at real
size. Random weights: the scores are noise. Needs ~15 GB of RAM and disk, a few minutes.
"""

from __future__ import annotations

import json
import logging
import random
import tempfile
import time
from pathlib import Path

import torch
from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from ocr_heads.core.commandline import Parser
from ocr_heads.core.errors import EXIT_EMPTY_RUN
from ocr_heads.data import haystack
from ocr_heads.data.samples import generate_samples
from ocr_heads.models.qwen2_vl import MAX_PIXELS, MIN_PIXELS
from ocr_heads.models.tiny.charset import build_char_tokenizer
from ocr_heads.pipeline.step2 import main as step2_main

logger = logging.getLogger(__name__)
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "Qwen2-VL-2B-Instruct.json"
# Full-size architectures by short name (bench/capture.py --size).
FULL_SIZE = {"2b": CONFIG, "7b": CONFIG.with_name("Qwen2-VL-7B-Instruct.json")}


def full_size_config(config: Path = CONFIG, layers: int | None = None) -> tuple[Qwen2VLConfig, object]:
    """A published architecture with the project's character tokenizer's token ids; (config, tokenizer).

    ``layers``: keep only that many decoder layers and vision blocks (every width stays the published one).
    """
    spec = {k: v for k, v in json.loads(config.read_text()).items() if not k.startswith("_")}
    if layers is not None:
        spec["text_config"]["num_hidden_layers"] = layers
        spec["vision_config"]["depth"] = min(spec["vision_config"]["depth"], layers)
    tokenizer = build_char_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in
           ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>", "<|im_start|>", "<|im_end|>",
            "<|endoftext|>")}
    spec["text_config"].update(bos_token_id=ids["<|im_start|>"], eos_token_id=ids["<|im_end|>"],
                               pad_token_id=ids["<|endoftext|>"])
    config = Qwen2VLConfig(**spec, image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                           vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    return config, tokenizer


def build_full_size(out: Path, seed: int = 0, config_path: Path = CONFIG, layers: int | None = None) -> Path:
    """Random bf16 weights of a published architecture (``layers``: see full_size_config), saved with its
    tokenizer and image processor."""
    config, tokenizer = full_size_config(config_path, layers)
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        model = Qwen2VLForConditionalGeneration(config).eval()
    finally:
        torch.set_default_dtype(previous)
    model.config.ocr_heads_random_weights = True
    logger.info("built %s parameters in bf16", f"{model.num_parameters():,}")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    Qwen2VLImageProcessorPil(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS).save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="work dir (default: a temp dir, removed after)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.out or Path(tmp)
        start = time.perf_counter()
        model = build_full_size(work / "Qwen2-VL-2B-random")
        data = work / "data"
        generate_samples(data, "passkey", 1, [128], 0, haystack.embedded_corpus(),
                         lambda rng: haystack.passkey_needle(random.Random(0)))
        common = ["--model_id", str(model), "--data", str(data), "--out", str(work / "scores"),
                  "--max_new_tokens", "3", "--dtype", "bfloat16"]
        codes = [step2_main("image", [*common, "--verify-eager"]), step2_main("text", [*common, "--verify-eager"])]
        for kind, suffix in (("image", "fg"), ("text", "te")):
            scores = json.loads((work / "scores" / kind / f"Qwen2-VL-2B-random_{suffix}.json").read_text())
            if len(scores) != 28 * 12:
                raise SystemExit(f"smoke: {kind} score file has {len(scores)} heads, expected 28 x 12")
        logger.info("smoke run passed in %.0f s (exit codes %s)", time.perf_counter() - start, codes)
        # Random weights rarely write the answer: a run without events (exit 3) still checks every shape.
        return max(0 if code == EXIT_EMPTY_RUN else code for code in codes)


if __name__ == "__main__":
    raise SystemExit(main())
