"""The bad-input catalogue: each mistake exits non-zero with one clear line and loses nothing written."""

import json
import logging
from pathlib import Path

import pytest

import step3_extracted_heads
from ocr_heads.core.io import read_jsonl
from ocr_heads.pipeline.experiment import masking_main
from ocr_heads.pipeline.step2 import main as step2_main

GOOD = {"id": "s0", "question": "What is the pass key?", "answer": "123", "context": "The pass key is 123.",
        "pages": ["s0/page_0.png"], "evidence": {"0": [[10, 10, 20, 30], [20, 10, 30, 30], [30, 10, 40, 30]]}}


def dataset(tmp_path: Path, *records: dict, name: str = "data") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def step2(model, data, out, *extra):
    return step2_main("image", ["--model_id", str(model), "--data", str(data), "--out", str(out),
                                "--max_new_tokens", "2", *extra])


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({k: v for k, v in GOOD.items() if k != "pages"}, "samples.jsonl: record 1 is missing field(s) pages"),
        (dict(GOOD, answer="999"), "sample s0: answer '999' does not occur in the context"),
        (dict(GOOD, evidence={"0": [[10, 10, 10, 30]]}),
         "sample s0: zero-size or malformed evidence box [10, 10, 10, 30]"),
    ],
)
def test_bad_records_stop_before_any_work(tiny_model_dir, tmp_path, capsys, record, message):
    assert step2(tiny_model_dir, dataset(tmp_path, record), tmp_path / "out") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and err[0].endswith(message)


def test_empty_dataset_and_missing_step1_output(tiny_model_dir, tmp_path, capsys):
    assert step2(tiny_model_dir, dataset(tmp_path), tmp_path / "out") == 2
    assert capsys.readouterr().err.strip().endswith("samples.jsonl holds no samples")
    assert step2(tiny_model_dir, tmp_path / "nowhere", tmp_path / "out") == 2
    assert "no step1 output at" in capsys.readouterr().err


@pytest.mark.parametrize(("page", "message"), [(None, "page image missing"), (b"junk", "cannot read page image")])
def test_missing_or_corrupt_page_is_logged_per_sample(tiny_model_dir, tmp_path, page, message, caplog):
    data = dataset(tmp_path, GOOD)
    if page is not None:
        (data / "s0").mkdir()
        (data / "s0" / "page_0.png").write_bytes(page)
    with caplog.at_level(logging.ERROR):
        assert step2(tiny_model_dir, data, tmp_path / "out") == 3  # every sample failed: an incomplete run
    (record,) = read_jsonl(tmp_path / "out" / "image" / "tiny-qwen2-vl_fg.samples.jsonl")
    assert message in record["error"] and message in caplog.text


def test_unknown_model_and_dir_without_config(tmp_path, capsys):
    data = dataset(tmp_path, GOOD)
    assert step2("no-such-org/no-such-model", data, tmp_path / "out") == 2
    # Tests run offline: a hub id without a cached copy says the hub is unreachable and what to do instead.
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: 'no-such-org/no-such-model' is not a local directory and "
                                               "the Hugging Face hub is unreachable")
    assert "--model_id DIR" in err[0]
    (tmp_path / "empty_model").mkdir()
    assert step2(tmp_path / "empty_model", data, tmp_path / "out") == 2
    assert capsys.readouterr().err.strip().endswith("is a directory without config.json: not a model checkpoint")


def test_bad_shard_and_unwritable_output(tiny_model_dir, tmp_path, capsys):
    data = dataset(tmp_path, GOOD)
    assert step2(tiny_model_dir, data, tmp_path / "out", "--shard", "3/2") == 2
    assert capsys.readouterr().err.strip() == "error: --shard 3/2: need 0 <= i < n"
    blocker = tmp_path / "a_file"
    blocker.write_text("keep me")
    assert step2(tiny_model_dir, data, blocker) == 2
    assert capsys.readouterr().err.strip() == f"error: output dir {blocker}/image is not writable: Not a directory"
    assert blocker.read_text() == "keep me"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"layer0": [1.0]}, "key 'layer0' is not a head name"),
        ({"l0_h0": ["high"]}, "l0_h0"),
        ({}, "empty"),
    ],
)
def test_bad_score_files(tmp_path, content, message, capsys):
    path = tmp_path / "scores.json"
    path.write_text(json.dumps(content))
    assert step3_extracted_heads.main(["--scores", str(path), "--out", str(tmp_path / "heads.json")]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: ") and message in line
    assert not (tmp_path / "heads.json").exists()


def test_head_list_naming_a_head_the_model_lacks(tiny_model_dir, passkey_dir, tmp_path, capsys):
    heads = tmp_path / "heads.json"
    heads.write_text(json.dumps({"heads": [{"head": "l9_h9", "score": 0.5, "frequency": 0.5}]}))
    code = masking_main(["--model_id", str(tiny_model_dir), "--datasets", "passkey_text", "--data",
                         str(passkey_dir), "--task", "text", "--heads", str(heads), "--do_masking",
                         "--num_of_masking_head", "1", "--n", "2", "--out", str(tmp_path / "res")])
    assert code == 2
    assert "error: head l9_h9 does not exist in a model with 3 layers x 4 heads" in capsys.readouterr().err


def test_a_truncated_page_writes_the_other_scores_and_exits_3_naming_it(tiny_model_dir, passkey_dir, tmp_path, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(passkey_dir, data)
    first = next(iter(read_jsonl(data / "samples.jsonl")))
    page = data / first["pages"][0]
    page.write_bytes(page.read_bytes()[:200])  # a truncated PNG
    assert step2(tiny_model_dir, data, tmp_path / "out") == 3
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and err[0].startswith(f"error: 1 of 6 samples failed ({first['id']})")
    scores = json.loads((tmp_path / "out" / "image" / "tiny-qwen2-vl_fg.meta.json").read_text())
    assert scores["n_samples"] == 5 and scores["n_failed"] == 1
