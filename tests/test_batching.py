"""--batch_size: samples generated together give exactly what one-at-a-time runs give.

The trained toy model (fp32) on toy passkey pages of different lengths, so every batch is
left-padded: step2 score files (both kinds) must be byte-identical, experiment results (masking,
sink) identical, and capture must report each sample in its own prompt positions.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ocr_heads.attention import capture
from ocr_heads.attention.edits import sink_probabilities
from ocr_heads.core.runner import run_batches
from ocr_heads.models import load_adapter
from ocr_heads.models.base import collate, left_padding
from ocr_heads.pipeline.experiment import run_main
from ocr_heads.pipeline.step2 import main as step2_main
from ocr_heads.toy.data import TOY_PROTOCOL

TOY = Path(__file__).resolve().parents[1] / "models" / "toy-qwen2-vl"
N = 8
NEW = 8


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory) -> Path:
    """N toy passkey samples on pages of 6, 5 and 4 tile rows: image prompts of three lengths."""
    from ocr_heads.toy.data import TileStyle, write_samples

    out = tmp_path_factory.mktemp("toy_data")
    for rows, n in ((6, N - 4), (5, 2), (4, 2)):
        write_samples(out, n, seed=1000, split=f"rows{rows}", style=TileStyle(rows=rows))
    return out


@pytest.fixture(scope="module")
def toy_adapter():
    return load_adapter(str(TOY), protocol=TOY_PROTOCOL)


def _toy_inputs(adapter, data: Path, n: int):
    """Inputs of ``n`` samples with pairwise different prompt lengths (so a batch of them is padded)."""
    from ocr_heads.data.samples import load_samples

    by_length = {}
    for sample in load_samples(data):
        inputs = adapter.image_inputs(sample.load_pages(), sample.question)
        by_length.setdefault(inputs.prompt_length, inputs)
    assert len(by_length) >= n, f"toy prompts have only {len(by_length)} lengths"
    return list(by_length.values())[:n]


def test_collate_left_pads_and_mrope_positions_match_each_sample_alone(toy_adapter, toy_data):
    batch = _toy_inputs(toy_adapter, toy_data, 3)
    lengths = [b.prompt_length for b in batch]
    pads = left_padding(batch)
    assert pads == [max(lengths) - n for n in lengths]
    tensors = collate(batch, toy_adapter.pad_token_id)
    assert tensors["input_ids"].shape == (3, max(lengths))
    for i, inputs in enumerate(batch):
        assert tensors["input_ids"][i, : pads[i]].tolist() == [toy_adapter.pad_token_id] * pads[i]
        assert torch.equal(tensors["input_ids"][i, pads[i] :], inputs.input_ids[0])
        assert tensors["attention_mask"][i].tolist() == [0] * pads[i] + [1] * lengths[i]
        assert tensors["mm_token_type_ids"][i, : pads[i]].tolist() == [0] * pads[i]
    assert torch.equal(tensors["image_grid_thw"], torch.cat([b.tensors["image_grid_thw"] for b in batch]))
    assert torch.equal(tensors["pixel_values"], torch.cat([b.tensors["pixel_values"] for b in batch]))
    # M-RoPE with left padding: each sample's real tokens get the positions it gets alone (2-D on the image).
    rope = toy_adapter.model.model.get_rope_index
    together, _ = rope(tensors["input_ids"], tensors["mm_token_type_ids"], tensors["image_grid_thw"],
                       attention_mask=tensors["attention_mask"])
    for i, inputs in enumerate(batch):
        alone, _ = rope(inputs.input_ids, inputs.tensors["mm_token_type_ids"], inputs.tensors["image_grid_thw"])
        assert torch.equal(together[:, i, pads[i] :], alone[:, 0])
        image = inputs.image_tokens[0].positions
        assert len(set(alone[1, 0, image.start : image.stop].tolist())) > 1  # rows differ: 2-D positions


def test_batched_capture_equals_each_sample_alone(toy_adapter, toy_data):
    batch = _toy_inputs(toy_adapter, toy_data, 3)
    alone = []
    with capture(toy_adapter) as recorder:
        for inputs in batch:
            recorder.reset(inputs.prompt_length)
            generated = toy_adapter.generate(inputs, NEW)
            alone.append((generated, recorder.result()))
        pads = left_padding(batch)
        recorder.reset(max(b.prompt_length for b in batch), pads=pads)
        together = toy_adapter.generate_batch(batch, NEW)
        records = recorder.results([len(g) for g in together])
    for (generated, record), tokens, batched, inputs in zip(alone, together, records, batch, strict=True):
        assert tokens == generated
        assert torch.equal(batched.argmax, record.argmax)
        assert int(batched.argmax.max()) < inputs.prompt_length  # own coordinates, inside its own prompt
        torch.testing.assert_close(batched.sink, record.sink, atol=1e-6, rtol=1e-5)


def _step2(kind: str, data: Path, out: Path, batch_size: int, *extra: str) -> None:
    argv = ["--model_id", str(TOY), "--protocol", TOY_PROTOCOL, "--data", str(data), "--out", str(out),
            "--max_new_tokens", str(NEW), "--batch_size", str(batch_size), *extra]
    assert step2_main(kind, argv) == 0


def _score_files(out: Path, kind: str) -> dict[str, bytes]:
    suffix = "fg" if kind == "image" else "te"
    return {name: (out / kind / name).read_bytes()
            for name in (f"toy-qwen2-vl_{suffix}.json", f"toy-qwen2-vl_{suffix}_mean.json")}


@pytest.fixture(scope="module")
def batch_1_scores(toy_data, tmp_path_factory):
    """Score files of --batch_size 1 runs, per kind (computed once)."""
    cache: dict[str, dict[str, bytes]] = {}

    def get(kind: str) -> dict[str, bytes]:
        if kind not in cache:
            out = tmp_path_factory.mktemp(f"b1_{kind}")
            _step2(kind, toy_data, out, 1)
            cache[kind] = _score_files(out, kind)
        return cache[kind]

    return get


@pytest.mark.parametrize("kind", ["image", "text"])
def test_step2_batch_8_writes_the_score_files_of_batch_1(kind, toy_data, batch_1_scores, tmp_path):
    _step2(kind, toy_data, tmp_path / "b8", 8)
    one, eight = batch_1_scores(kind), _score_files(tmp_path / "b8", kind)
    assert one == eight
    means = json.loads(next(v for k, v in one.items() if k.endswith("_mean.json")))
    assert max(means.values()) > 0.3  # real heads were found, not an all-zero file
    # Shards at different batch sizes, then a merge: the same files again.
    _step2(kind, toy_data, tmp_path / "sh", 3, "--shard", "0/2")
    _step2(kind, toy_data, tmp_path / "sh", 2, "--shard", "1/2")
    _step2(kind, toy_data, tmp_path / "sh", 1, "--merge")
    assert _score_files(tmp_path / "sh", kind) == one


def test_step2_resumes_at_another_batch_size(toy_data, batch_1_scores, tmp_path):
    _step2("image", toy_data, tmp_path / "r", 3, "--n", "5")
    log = tmp_path / "r" / "image" / "toy-qwen2-vl_fg.samples.jsonl"
    assert len(log.read_text().splitlines()) == 5  # a batch is logged per sample
    _step2("image", toy_data, tmp_path / "r", 8)
    assert len(log.read_text().splitlines()) == N  # only the 3 missing ones ran
    assert _score_files(tmp_path / "r", "image") == batch_1_scores("image")


def _experiment(experiment: str, data: Path, out: Path, batch_size: int, heads: Path, *extra: str) -> dict:
    argv = ["--datasets", "passkey", "--task", "image", "--model_id", str(TOY), "--protocol", TOY_PROTOCOL,
            "--data", str(data),
            "--n", str(N), "--max_new_tokens", str(NEW), "--out", str(out), "--heads", str(heads),
            "--batch_size", str(batch_size), *extra]
    assert run_main(experiment, argv) == 0
    (summary,) = [path for path in (out / experiment / "toy-qwen2-vl").glob("passkey_*.json")
                  if not path.name.endswith(".config.json")]
    return json.loads(summary.read_text())


@pytest.fixture
def heads_file(tmp_path) -> Path:
    # The toy model's top OCR heads (docs/toy_model.md): masking the first three costs it about half its keys.
    path = tmp_path / "heads.json"
    ranking = ["l1_h4", "l1_h5", "l1_h6", "l1_h7", "l1_h2", "l1_h3"]
    path.write_text(json.dumps({"heads": [{"head": h, "score": 1.0 - i / 10} for i, h in enumerate(ranking)]}))
    return path


@pytest.mark.parametrize(("experiment", "extra"), [
    ("masking", ("--do_masking", "--num_of_masking_head", "3")),
    ("sink", ("--do_masking", "--unmasking", "--num_of_masking_head", "2")),  # the authors' flags for the edit
])
def test_experiment_metrics_equal_at_batch_8(experiment, extra, toy_data, heads_file, tmp_path):
    one = _experiment(experiment, toy_data, tmp_path / "b1", 1, heads_file, *extra)
    eight = _experiment(experiment, toy_data, tmp_path / "b8", 8, heads_file, *extra)
    assert one["n"] == eight["n"] == N
    assert eight["metrics"] == one["metrics"]
    assert eight["predictions"] == one["predictions"]
    if experiment == "masking":
        assert one["metrics"]["em"] < 1.0  # the masked heads matter: equality is not of an untouched model


def test_sink_edit_on_a_left_padded_sample_equals_the_sample_alone():
    """The sink of a padded sample is its first real token: its redistributed rows equal the unpadded ones."""
    torch.manual_seed(3)
    module = SimpleNamespace(layer_idx=0, is_causal=True)
    length, pad = 5, 3
    query, key = torch.randn(1, 4, length, 8), torch.randn(1, 2, length, 8)
    alone = sink_probabilities(module, query, key, None, [0, 3], 0.4)
    padded_q = torch.cat([torch.randn(1, 4, pad, 8), query], dim=2)
    padded_k = torch.cat([torch.randn(1, 2, pad, 8), key], dim=2)
    real = torch.arange(length + pad) >= pad
    mask = (torch.tril(torch.ones(length + pad, length + pad, dtype=torch.bool)) & real[None, :])[None, None]
    padded = sink_probabilities(module, padded_q, padded_k, mask, [0, 3], 0.4)
    torch.testing.assert_close(padded[..., pad:, pad:], alone)
    assert torch.all(padded[..., pad:, :pad] == 0)  # nothing moves onto the pads
    # The sink keeps beta of its own probability: hand-check one row against the plain softmax.
    scores = query[0, 3, -1] @ key[0, 1].T / 8**0.5
    p0 = torch.softmax(scores, dim=-1)[0]
    torch.testing.assert_close(padded[0, 1, -1, pad], 0.4 * p0)


def test_a_failing_batch_is_retried_sample_by_sample(tmp_path):
    seen = []

    def process(batch: list[int]) -> list[dict | Exception]:
        seen.append(list(batch))
        if 3 in batch and len(batch) > 1:
            raise RuntimeError("the batch fails")
        return [ValueError("bad sample") if item == 3 else {"value": item * 10} for item in batch]

    log = tmp_path / "log.jsonl"
    assert run_batches([1, 2, 3, 4, 5], str, process, log, "test", batch_size=4) == (4, 1)
    assert seen == [[1, 2, 3, 4], [1], [2], [3], [4], [5]]
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["id"] for r in records] == ["1", "2", "3", "4", "5"]
    assert records[2] == {"id": "3", "error": "ValueError: bad sample"}
    assert records[4] == {"id": "5", "value": 50}
    with pytest.raises(ValueError, match="at least 1"):
        run_batches([1], str, process, log, "test", batch_size=0)
