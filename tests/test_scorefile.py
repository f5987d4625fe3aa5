"""Score files: the authors' layout loads unchanged, our saves are deterministic, bad files fail clearly."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import pytest

from ocr_heads.scores.files import companion_paths, infer_from_name, load_scores, save_scores

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference_scores"

# 2 layers x 2 heads, unequal list lengths; means and frequencies worked out by hand below.
PER_HEAD = {
    "l0_h0": [1.0, 0.0, 0.5, 0.5],  # mean 0.5, non-zero 3/4
    "l0_h1": [0.2, 0.2, 0.2, 0.2],  # mean 0.2, non-zero 4/4
    "l1_h0": [0.0] * 9 + [0.9],  # mean 0.09, non-zero 1/10
    "l1_h1": [0.0] * 9 + [1.0],  # mean 0.1, non-zero 1/10
}
META = {"kind": "ocr", "model": "tiny-test-model", "num_layers": 2, "num_heads": 2, "dataset": "fixture"}


def _write(path: Path, obj: object) -> Path:
    path.write_text(json.dumps(obj))
    return path


def test_save_writes_three_files_and_loads_back(tmp_path: Path) -> None:
    save_scores(tmp_path / "run.json", PER_HEAD, META)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json", "run.meta.json", "run_mean.json"]
    means = json.loads((tmp_path / "run_mean.json").read_text())
    assert means == pytest.approx({"l0_h0": 0.5, "l0_h1": 0.2, "l1_h0": 0.09, "l1_h1": 0.1})
    loaded = load_scores(tmp_path / "run.json")
    assert (loaded.kind, loaded.model, loaded.num_layers, loaded.num_heads) == (
        "ocr",
        "tiny-test-model",
        2,
        2,
    )
    assert loaded.per_head == PER_HEAD
    assert [len(v) for v in loaded.per_head.values()] == [4, 4, 10, 10]
    assert loaded.means == pytest.approx({"l0_h0": 0.5, "l0_h1": 0.2, "l1_h0": 0.09, "l1_h1": 0.1})
    assert loaded.frequencies() == pytest.approx({"l0_h0": 0.75, "l0_h1": 1.0, "l1_h0": 0.1, "l1_h1": 0.1})
    assert loaded.matrix().ravel().tolist() == pytest.approx([0.5, 0.2, 0.09, 0.1])  # row = layer
    assert loaded.meta["dataset"] == "fixture"


def test_save_is_byte_identical_whatever_the_input_order(tmp_path: Path) -> None:
    save_scores(tmp_path / "a" / "run.json", PER_HEAD, META)
    shuffled = {key: [int(v) if v in (0.0, 1.0) else v for v in PER_HEAD[key]] for key in reversed(PER_HEAD)}
    save_scores(tmp_path / "b" / "run.json", shuffled, dict(reversed(list(META.items()))))
    for name in ("run.json", "run_mean.json", "run.meta.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert list(json.loads((tmp_path / "a" / "run.json").read_text())) == ["l0_h0", "l0_h1", "l1_h0", "l1_h1"]
    assert list(json.loads((tmp_path / "a" / "run.meta.json").read_text())) == sorted(META)


def test_save_rejects_bad_meta_and_shape(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=re.escape("meta is missing required keys: num_layers, num_heads")):
        save_scores(tmp_path / "x.json", PER_HEAD, {"kind": "ocr", "model": "m"})
    with pytest.raises(
        ValueError, match=re.escape("meta kind must be one of ('first_token_mass', 'image_mass', 'ocr', 'ocr_mass', "
                                    "'prefill', 'question_mass', 'retrieval'), got 'image'")
    ):
        save_scores(tmp_path / "x.json", PER_HEAD, {**META, "kind": "image"})
    with pytest.raises(
        ValueError, match=re.escape("the scores cover 2 layers x 2 heads but meta says 3 x 2")
    ):
        save_scores(tmp_path / "x.json", PER_HEAD, {**META, "num_layers": 3})
    with pytest.raises(
        ValueError, match=re.escape("head l1_h0 does not exist in a model with 1 layers x 2 heads")
    ):
        save_scores(tmp_path / "x.json", PER_HEAD, {**META, "num_layers": 1})


def test_kind_and_model_from_authors_file_names(tmp_path: Path) -> None:
    assert infer_from_name("Qwen2-VL-2B-Instruct_te_2.json") == ("retrieval", "Qwen2-VL-2B-Instruct")
    assert infer_from_name("InternVL2-8B_fg_2.json") == ("ocr", "InternVL2-8B")
    assert infer_from_name("Qwen2-VL-7B-Instruct_cg_2.json") == ("ocr", "Qwen2-VL-7B-Instruct")
    assert infer_from_name("my_run.json") == (None, None)
    loaded = load_scores(_write(tmp_path / "M-1B_te_2.json", PER_HEAD))
    assert (loaded.kind, loaded.model) == ("retrieval", "M-1B")


def test_authors_mean_companions_are_found_and_cross_checked(tmp_path: Path, caplog) -> None:
    _, image = companion_paths(tmp_path / "M_fg_2.json")
    assert [p.name for p in image] == ["M_fg_2_mean.json", "M_fg_mean_2.json", "M_mean_fg_2.json"]
    _, text = companion_paths(tmp_path / "M_te_2.json")
    assert "M_mean_te_2.json" in [p.name for p in text]

    _write(tmp_path / "M_te_2.json", PER_HEAD)
    _write(tmp_path / "M_mean_te_2.json", {"l0_h0": 0.5, "l0_h1": 0.2, "l1_h0": 0.09, "l1_h1": 0.1})
    with caplog.at_level(logging.WARNING):
        load_scores(tmp_path / "M_te_2.json")
    assert not caplog.records

    _write(tmp_path / "M_mean_te_2.json", {"l0_h0": 0.7, "l0_h1": 0.2, "l1_h0": 0.09, "l1_h1": 0.1})
    with caplog.at_level(logging.WARNING):
        loaded = load_scores(tmp_path / "M_te_2.json")
    assert "1 means disagree with the event lists (e.g. l0_h0); using the lists" in caplog.text
    assert loaded.means["l0_h0"] == 0.5


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            {"l0_h0": [1.0], "layer1": [0.0]},
            "key 'layer1' is not a head name (expected 'l<layer>_h<head>', e.g. 'l3_h1')",
        ),
        ({"l0_h0": [1.0, "x"]}, "head l0_h0 value #1 is not a finite number: 'x'"),
        ({"l0_h0": [True]}, "head l0_h0 value #0 is not a finite number: True"),
        (
            {"l0_h0": 0.5},
            "head l0_h0 holds a single number, not a list of event values (is this a _mean file?",
        ),
        ({"l0_h0": "0.5"}, "head l0_h0 must map to a list of numbers, got str"),
        ({}, "the score file is empty (no heads)"),
        ([1, 2], "expected a JSON object {'l0_h0': [values...], ...}, got list"),
        ({"l0_h0": [1.0], "l1_h1": [0.0]}, "2 heads missing for a 2 layers x 2 heads model: l0_h1, l1_h0"),
    ],
)
def test_bad_files_fail_with_clear_messages(tmp_path: Path, content: object, message: str) -> None:
    path = _write(tmp_path / "bad.json", content)
    with pytest.raises(ValueError, match=re.escape(f"{path}: {message}")):
        load_scores(path)


def test_zero_byte_file_and_sidecar_mismatch(tmp_path: Path) -> None:
    empty = tmp_path / "empty.json"
    empty.write_text("")
    with pytest.raises(ValueError, match=re.escape(f"{empty}: the score file is empty (0 bytes)")):
        load_scores(empty)
    _write(tmp_path / "run.json", PER_HEAD)
    _write(tmp_path / "run.meta.json", {**META, "num_heads": 4})
    with pytest.raises(ValueError, match=re.escape("the sidecar says num_heads=4 but the score file has 2")):
        load_scores(tmp_path / "run.json")


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="authors' reference scores not present")
def test_authors_released_files_load_unchanged() -> None:
    intern = load_scores(REFERENCE / "InternVL2-8B_fg_2.json")
    assert (intern.kind, intern.model, intern.num_layers, intern.num_heads) == ("ocr", "InternVL2-8B", 32, 32)
    assert len(intern.per_head["l0_h0"]) == 550 and len(intern.per_head["l0_h1"]) == 51  # unequal lengths
    qwen = load_scores(REFERENCE / "Qwen2-VL-2B-Instruct_te_2.json")
    assert (qwen.kind, qwen.model, qwen.num_layers, qwen.num_heads) == (
        "retrieval",
        "Qwen2-VL-2B-Instruct",
        28,
        12,
    )
    assert {len(v) for v in qwen.per_head.values()} == {600}
    assert qwen.means["l0_h3"] == pytest.approx(0.9953, abs=1e-4)
