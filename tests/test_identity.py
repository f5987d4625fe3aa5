"""Outputs keyed by what was loaded, and reruns that replace (issue 21, items 1 and 2).

A model is identified by a fingerprint of its files, not by its path: another checkpoint under the same
folder name is refused, a copy of the same one resumes. A rerun's result rows replace its earlier ones,
the report never averages rows that differ in anything but the seed, and step2 with a smaller --n keeps
the samples an earlier run scored.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path

import pandas as pd
import pytest
from safetensors.torch import load_file, save_file

from ocr_heads.core import provenance
from ocr_heads.core.provenance import MODEL_KEY, folder_fingerprint, model_fingerprint
from ocr_heads.pipeline.experiment import masking_main
from ocr_heads.pipeline.step2 import main as step2_main
from ocr_heads.report import tables


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def perturbed_copy(model_dir: Path, dest: Path) -> Path:
    """The same checkpoint, same folder name and same safetensors header, every weight nudged."""
    shutil.copytree(model_dir, dest)
    for path in dest.glob("*.safetensors"):
        tensors = load_file(path)
        save_file({name: t + 1e-3 if t.is_floating_point() else t for name, t in tensors.items()}, path,
                  metadata={"format": "pt"})
    return dest


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


# ---------------------------------------------------------------- the fingerprint


def test_fingerprint_follows_the_weights_not_the_path(tiny_model_dir, tmp_path, monkeypatch):
    copy = shutil.copytree(tiny_model_dir, tmp_path / "elsewhere" / tiny_model_dir.name)
    other = perturbed_copy(tiny_model_dir, tmp_path / "other" / tiny_model_dir.name)
    assert model_fingerprint(str(copy)) == model_fingerprint(str(tiny_model_dir))
    assert model_fingerprint(str(other)) != model_fingerprint(str(tiny_model_dir))
    # A large file is read in part only (header + chunks of its tensor data): a perturbation still shows.
    monkeypatch.setattr(provenance, "WHOLE_FILE_LIMIT", 0)
    assert folder_fingerprint(copy) == folder_fingerprint(tiny_model_dir) != folder_fingerprint(other)
    # Files that do not make the weights (tokenizer, card) do not change it.
    (copy / "README.md").write_text("a card")
    assert folder_fingerprint(copy) == folder_fingerprint(tiny_model_dir)


def test_hub_id_without_a_cached_snapshot_is_id_at_revision(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(provenance, "hub_snapshot", lambda model_id, revision=None: None)
    assert model_fingerprint("Org/Some-Model") == "Org/Some-Model@unresolved"
    snapshot = tmp_path / "models--Org--M" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    monkeypatch.setattr(provenance, "hub_snapshot", lambda model_id, revision=None: snapshot)
    assert model_fingerprint("Org/M") == folder_fingerprint(snapshot)
    assert provenance.model_origin("Org/M") == "Org/M@abc123"


# ---------------------------------------------------------------- step2


def step2_args(model: Path, data: Path, out: Path, n: int) -> list[str]:
    return ["--model_id", str(model), "--data", str(data), "--out", str(out), "--n", str(n), "--max_new_tokens", "1"]


def test_step2_refuses_another_model_of_the_same_name_and_resumes_a_copy(tiny_model_dir, passkey_dir, tmp_path,
                                                                        capsys, caplog):
    out = tmp_path / "scores"
    assert step2_main("image", step2_args(tiny_model_dir, passkey_dir, out, 1)) == 0
    score_file = out / "image" / f"{tiny_model_dir.name}_fg.json"
    before = score_file.read_bytes()
    other = perturbed_copy(tiny_model_dir, tmp_path / "run2" / tiny_model_dir.name)
    capsys.readouterr()
    assert step2_main("image", step2_args(other, passkey_dir, out, 1)) == 2
    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and str(tiny_model_dir) in errors[0] and str(other) in errors[0]
    assert "another model" in errors[0] and score_file.read_bytes() == before
    # The same weights from another path: the same model, so the run resumes.
    copy = shutil.copytree(tiny_model_dir, tmp_path / "copy" / tiny_model_dir.name)
    with caplog.at_level(logging.INFO):
        assert step2_main("image", step2_args(copy, passkey_dir, out, 1)) == 0
    assert "already done, resuming" in caplog.text
    meta = json.loads((out / "image" / f"{tiny_model_dir.name}_fg.meta.json").read_text())
    assert meta[MODEL_KEY] == model_fingerprint(str(tiny_model_dir))


def test_step2_folder_written_before_fingerprints_still_resumes(tiny_model_dir, passkey_dir, tmp_path, caplog):
    out = tmp_path / "scores"
    assert step2_main("image", step2_args(tiny_model_dir, passkey_dir, out, 1)) == 0
    run_file = out / "image" / f"{tiny_model_dir.name}_fg.run.json"
    legacy = json.loads(run_file.read_text())
    del legacy[MODEL_KEY], legacy["model_source"]  # as written before this change
    run_file.write_text(json.dumps(legacy))
    with caplog.at_level(logging.INFO):
        assert step2_main("image", step2_args(tiny_model_dir, passkey_dir, out, 1)) == 0
    assert "before models were fingerprinted" in caplog.text
    assert json.loads(run_file.read_text())[MODEL_KEY] == model_fingerprint(str(tiny_model_dir))


def test_step2_smaller_n_keeps_the_larger_set_unless_asked(tiny_model_dir, passkey_dir, tmp_path, caplog):
    out = tmp_path / "scores"
    meta = out / "image" / f"{tiny_model_dir.name}_fg.meta.json"
    assert step2_main("image", step2_args(tiny_model_dir, passkey_dir, out, 3)) == 0
    three = json.loads(meta.read_text())
    assert three["n_samples"] == 3
    with caplog.at_level(logging.INFO):
        assert step2_main("image", step2_args(tiny_model_dir, passkey_dir, out, 2)) == 0
    assert "holds 1 more scored by an earlier run" in caplog.text and "--restrict_to_n" in caplog.text
    assert json.loads(meta.read_text()) == three
    assert step2_main("image", [*step2_args(tiny_model_dir, passkey_dir, out, 2), "--restrict_to_n"]) == 0
    assert json.loads(meta.read_text())["n_samples"] == 2


# ---------------------------------------------------------------- experiments


def masking_args(model: Path, data: Path, out: Path, n: int) -> list[str]:
    return ["--datasets", "passkey", "--task", "image", "--model_id", str(model), "--data", f"passkey={data}",
            "--n", str(n), "--max_new_tokens", "2", "--out", str(out)]


def test_masking_rerun_with_larger_n_replaces_its_rows(tiny_model_dir, passkey_dir, tmp_path):
    out = tmp_path / "results"
    assert masking_main(masking_args(tiny_model_dir, passkey_dir, out, 1)) == 0
    assert masking_main(masking_args(tiny_model_dir, passkey_dir, out, 2)) == 0
    rows = read_csv(out / "masking.csv")
    assert sorted(row["metric"] for row in rows) == ["accuracy", "em"]  # one row per (config, metric)
    assert {row["n"] for row in rows} == {"2"}  # the second run's
    assert masking_main(masking_args(tiny_model_dir, passkey_dir, out, 2)) == 0  # a plain rerun: no new row
    assert read_csv(out / "masking.csv") == rows


def test_masking_refuses_another_model_of_the_same_name(tiny_model_dir, passkey_dir, tmp_path, capsys):
    out = tmp_path / "results"
    assert masking_main(masking_args(tiny_model_dir, passkey_dir, out, 1)) == 0
    rows = read_csv(out / "masking.csv")
    other = perturbed_copy(tiny_model_dir, tmp_path / "run2" / tiny_model_dir.name)
    capsys.readouterr()
    assert masking_main(masking_args(other, passkey_dir, out, 1)) == 2
    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and str(tiny_model_dir) in errors[0] and str(other) in errors[0]
    assert read_csv(out / "masking.csv") == rows
    copy = shutil.copytree(tiny_model_dir, tmp_path / "copy" / tiny_model_dir.name)
    assert masking_main(masking_args(copy, passkey_dir, out, 1)) == 0


def test_masking_run_written_before_fingerprints_still_resumes(tiny_model_dir, passkey_dir, tmp_path):
    out = tmp_path / "results"
    assert masking_main(masking_args(tiny_model_dir, passkey_dir, out, 1)) == 0
    config = out / "masking" / tiny_model_dir.name / "passkey.config.json"
    legacy = json.loads(config.read_text())
    legacy.pop(MODEL_KEY)  # the older layout: the model pinned by model_id
    config.write_text(json.dumps(legacy))
    assert masking_main(masking_args(tiny_model_dir, passkey_dir, out, 1)) == 0
    assert json.loads(config.read_text())[MODEL_KEY] == model_fingerprint(str(tiny_model_dir))


# ---------------------------------------------------------------- the report


def test_report_shows_rows_that_differ_in_n_apart(tmp_path):
    row = {"model": "m", "protocol": "paper", "dataset": "passkey", "task": "image", "metric": "accuracy"}
    frame = pd.DataFrame([
        {**row, "head_set": "none", "k": 0, "seed": 1234, "value": 0.0, "n": 3, "note": ""},
        {**row, "head_set": "none", "k": 0, "seed": 1234, "value": 0.25, "n": 4, "note": ""},
        {**row, "head_set": "random", "k": 2, "seed": 1, "value": 0.5, "n": 4, "note": ""},
        {**row, "head_set": "random", "k": 2, "seed": 2, "value": 1.0, "n": 4, "note": ""},
    ])
    frame.to_csv(tmp_path / "masking.csv", index=False)
    flat = tables.flat(tables.pivot(tables.load_results(tmp_path / "masking.csv")))
    assert 0.125 not in flat["none"].tolist()  # the number no run produced
    by_rows = flat.set_index("rows")
    assert by_rows.loc["n=3", "none"] == 0.0 and by_rows.loc["n=4", "none"] == 0.25
    assert by_rows.loc["", "random_k2"] == 0.75  # two seeds, equal otherwise: their mean
    # Rows equal in everything, seed included, but another value (a rerun appended by an older version).
    frame.loc[1, "n"] = 3
    frame.to_csv(tmp_path / "masking.csv", index=False)
    flat = tables.flat(tables.pivot(tables.load_results(tmp_path / "masking.csv")))
    assert sorted(flat["none"].dropna()) == [0.0, 0.25]


@pytest.mark.parametrize("head_set, seeds, expect", [("top", ("1234", "7"), 1), ("random", ("1234", "7"), 2)])
def test_a_fixed_head_set_is_one_run_under_any_seed(tmp_path, head_set, seeds, expect):
    from ocr_heads.experiments.run import replace_csv_rows

    path = tmp_path / "masking.csv"
    for seed in seeds:
        replace_csv_rows(path, [{"model": "m", "protocol": "", "dataset": "passkey", "task": "image",
                                 "head_set": head_set, "k": 2, "seed": seed, "metric": "em", "value": "0.5", "n": 2,
                                 "note": ""}], "masking")
    assert len(read_csv(path)) == expect


# ---------------------------------------------------------------- the case study


def test_case_study_refuses_another_model_of_the_same_name(tiny_model_dir, tmp_path, capsys):
    from ocr_heads.data import haystack
    from ocr_heads.data.samples import generate_samples
    from ocr_heads.pipeline.case_study import main as case_main

    data = tmp_path / "chars"
    generate_samples(data, "char_7", 1, [64], 42, haystack.embedded_corpus(),
                     lambda _rng: haystack.single_char_needle("7"))

    def argv(model: Path) -> list[str]:
        return ["--model_id", str(model), "--data", str(data), "--n", "1", "--max_new_tokens", "2", "--out",
                str(tmp_path / "results")]

    assert case_main(argv(tiny_model_dir)) == 0
    other = perturbed_copy(tiny_model_dir, tmp_path / "run2" / tiny_model_dir.name)
    capsys.readouterr()
    assert case_main(argv(other)) == 2
    errors = error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and str(tiny_model_dir) in errors[0] and str(other) in errors[0]
    copy = shutil.copytree(tiny_model_dir, tmp_path / "copy" / tiny_model_dir.name)
    assert case_main(argv(copy)) == 0
