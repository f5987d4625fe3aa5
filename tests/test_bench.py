"""The benchmarks run first time on a GPU: their CPU path works and the full-size architectures are right."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from ocr_heads.smoke import FULL_SIZE, full_size_config

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _load(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))  # the benchmarks import their shared helpers (bench/measure.py) by name
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
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
    case = capture_bench.measure(str(tiny_model_dir), "image", 1, new_tokens=2, pairs=2, device="cpu", batch=2,
                                 methods=("capture", "plain"))
    assert case["device"] == "cpu" and case["batch"] == 2 and case["prompt_tokens"] > 100
    for method in ("capture", "plain"):
        row = case["methods"][method]
        assert row["seconds"] > 0 and row["peak_mib"] >= 0
    # One ratio per interleaved round, summarised by their median and range.
    assert len(case["time_ratios"]) == 2 and all(r > 0 for r in case["time_ratios"])
    low, high = case["time_ratio_range"]
    assert low <= case["time_ratio"] <= high
    if torch.cuda.is_available():
        return
    with pytest.raises(SystemExit, match="no GPU"):
        capture_bench.measure(str(tiny_model_dir), "text", 16, new_tokens=1, pairs=1, device="cuda")


def test_capture_bench_summary_pairs_rounds_and_reports_failures():
    """Ratios come from runs of the same round; a method that failed is a row that says so, not a ratio."""
    capture_bench = _load("capture")
    runs = {"authors": capture_bench.Runs(error="OutOfMemoryError: CUDA out of memory"),
            "capture": capture_bench.Runs(seconds=[2.0, 1.0, 3.0], peaks_mib=[5.0, 4.0, 6.0]),
            "plain": capture_bench.Runs(seconds=[1.0, 1.0, 2.0], peaks_mib=[0.5, 0.2, 0.3])}
    case = capture_bench.summarize("text", 8192, 1, 8234, runs, "cpu")
    assert case["time_ratios"] == [2.0, 1.0, 1.5] and case["time_ratio"] == 1.5
    assert case["time_ratio_range"] == [1.0, 2.0]
    assert case["methods"]["capture"] == {"seconds": 2.0, "peak_mib": 4.0}
    assert case["mem_ratio_ours_plain"] == 4.0  # the plain peak (under 1 MiB) counts as 1 MiB
    assert "error" in case["methods"]["authors"] and "peak_mem_ratio" not in case


def test_build_full_size_keeps_the_published_widths_with_fewer_layers():
    config, _ = full_size_config(FULL_SIZE["2b"], layers=4)
    text = config.text_config
    assert (text.num_hidden_layers, text.hidden_size, text.num_attention_heads, text.num_key_value_heads,
            text.intermediate_size) == (4, 1536, 12, 2, 8960)
    assert config.vision_config.depth == 4 and config.vision_config.embed_dim == 1280


def test_look_bench_prints_its_table_and_a_finite_memory_ratio(tiny_model_dir, capsys):
    """bench/look.py at a tiny length: the table, the ratios and the JSON line; look's peak memory ratio is finite."""
    import json
    import math

    look_bench = _load("look")
    summary = look_bench.main(["--model", str(tiny_model_dir), "--lengths", "256", "--pairs", "2", "--new", "2",
                               "--max-gib", "0", "--json"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("device: cpu") and "interleaved" in lines[0]
    assert lines[1].split() == ["tokens", "|", "method", "peak", "MiB", "median", "s"]
    rows = [line.split() for line in lines[2:5]]
    assert [row[2] for row in rows] == ["look", "plain", "eager"]  # one page + question: eager fits
    assert all(float(row[3]) >= 0 and float(row[4]) > 0 for row in rows)
    assert lines[5].split()[:4] == ["tokens", "|", "look/plain", "mem"]
    assert json.loads(lines[-1]) == json.loads(json.dumps(summary))
    (case,) = summary["cases"]
    assert case["prompt_tokens"] > 256 and case["image_tokens"] > 0  # never shorter than one page and the question
    assert math.isfinite(case["mem_ratio"]) and case["mem_ratio"] > 0
    assert len(case["time_ratios"]) == 2 and math.isfinite(case["eager_mem_ratio"])


def test_look_bench_skips_eager_beyond_its_estimate():
    """The eager row says how much it would need and is not run; look/plain ratios stay."""
    look_bench = _load("look")
    runs = {"look": look_bench.Runs(seconds=[2.0, 3.0], peaks_mib=[12.0, 11.0]),
            "plain": look_bench.Runs(seconds=[1.0, 2.0], peaks_mib=[10.0, 10.0]),
            "eager": look_bench.Runs(error="would need 68.0 GiB: not run")}
    case = look_bench.summarize(runs, 32768, 32768, 234)
    assert case["time_ratios"] == [2.0, 1.5] and case["time_ratio"] == 1.75
    assert case["mem_ratio"] == 1.1 and "eager_mem_ratio" not in case
    assert case["methods"]["eager"] == {"error": "would need 68.0 GiB: not run"}


def test_multi_score_bench_interleaves_ocr_and_all_and_prints_the_ratios(capsys):
    """bench/multi_score.py at a tiny size: both measurements, their ratios from best times, the JSON line."""
    import json

    toy = Path(__file__).resolve().parents[1] / "models" / "toy-qwen2-vl"
    if not (toy / "config.json").is_file():
        pytest.skip("toy checkpoint not present")
    bench = _load("multi_score")
    summary = bench.main(["--model", str(toy), "--n", "2", "--pairs", "1", "--max_new_tokens", "6", "--json"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("2 toy samples, 1 interleaved rounds (ocr, all)") and "question_mass" in lines[0]
    assert [line.split()[0] for line in lines[2:4]] == ["command", "scoring"]
    assert json.loads(lines[-1]) == json.loads(json.dumps(summary))
    for what in ("command", "scoring"):
        row = summary[what]
        assert row["ocr_s"] > 0 and row["all_s"] > 0 and len(row["round_ratios"]) == 1
        assert row["ratio"] == pytest.approx(row["all_s"] / row["ocr_s"], abs=1e-3)
    assert len(summary["scores"]) >= 6 and "ocr" in summary["scores"]
