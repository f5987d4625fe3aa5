"""The benchmarks run first time on a GPU: their CPU path works and the full-size architectures are right."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from ocr_heads.smoke import FULL_SIZE, full_size_config

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("size", "layers", "heads", "kv_heads", "hidden", "vocab"),
                         [("2b", 28, 12, 2, 1536, 151936), ("7b", 28, 28, 4, 3584, 152064)])
def test_full_size_architectures_are_the_published_ones(size, layers, heads, kv_heads, hidden, vocab):
    config, tokenizer = full_size_config(FULL_SIZE[size])
    text = config.text_config
    assert (text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads, text.hidden_size,
            text.vocab_size) == (layers, heads, kv_heads, hidden, vocab)
    assert text.hidden_size // text.num_attention_heads == 128
    assert config.vision_config.depth == 32 and config.vision_config.embed_dim == 1280
    assert config.image_token_id == tokenizer.convert_tokens_to_ids("<|image_pad|>")


def test_capture_bench_measures_a_batch_on_cpu(tiny_model_dir):
    """bench/capture.py --device cpu at a small size: the path --device cuda --size 2b takes on a GPU."""
    capture_bench = _load("capture")
    for method in ("capture", "plain"):
        row = capture_bench.measure(str(tiny_model_dir), method, "image", 1, 2, 1, device="cpu", batch=2)
        assert row["device"] == "cpu" and row["batch"] == 2 and row["method"] == method
        assert row["prompt_tokens"] > 100 and row["seconds"] > 0 and row["peak_mib"] >= 0
    if torch.cuda.is_available():
        return
    with pytest.raises(SystemExit, match="no GPU"):
        capture_bench.measure(str(tiny_model_dir), "plain", "text", 16, 1, 1, device="cuda")
