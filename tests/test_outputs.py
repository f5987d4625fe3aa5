"""Outputs a researcher can trust (issue 12): one test per reproduced problem, items 1-8.

Each test runs the commands a user runs (in-process where the script only calls ``main``, as a
subprocess where the exit status or the absence of a traceback is the point).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from ocr_heads.core.commandline import Parser
from ocr_heads.core.errors import EXIT_EMPTY_RUN
from ocr_heads.core.io import write_json_atomic
from ocr_heads.core.provenance import RANDOM_NOTE
from ocr_heads.pipeline.experiment import masking_main
from ocr_heads.pipeline.step2 import build_parser as step2_parser
from ocr_heads.pipeline.step2 import main as step2_main
from ocr_heads.pipeline.step3 import main as step3_main
from ocr_heads.report import build_report, tables
from ocr_heads.report.__main__ import main as report_main
from ocr_heads.scores.files import save_scores

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


def script(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=ENV, cwd=cwd)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error" in line.lower() or "Traceback" in line]


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


# ---------------------------------------------------------------- 1. never average across models


def test_item1_masking_rows_carry_the_model_and_the_report_keeps_models_apart(tiny_model_dir, passkey_dir,
                                                                              tmp_path, monkeypatch):
    other = shutil.copytree(tiny_model_dir, tmp_path / "tiny-copy")  # a second model name
    out = tmp_path / "results"
    for model in (tiny_model_dir, other):
        argv = ["--datasets", "passkey", "--task", "image", "--model_id", str(model), "--data",
                f"passkey={passkey_dir}", "--n", "1", "--max_new_tokens", "2", "--out", str(out)]
        assert masking_main(argv) == 0
    rows = read_csv(out / "masking.csv")
    assert {row["model"] for row in rows} == {"tiny-qwen2-vl", "tiny-copy"}
    assert all(row["note"] == RANDOM_NOTE for row in rows)
    scores = tmp_path / "s.json"
    save_scores(scores, {"l0_h0": [1.0, 0.0], "l0_h1": [0.0, 0.5]}, {"kind": "ocr", "model": "m",
                                                                      "num_layers": 1, "num_heads": 2})
    assert report_main(["--scores", str(scores), "--results", str(out), "--out", str(tmp_path / "R")]) == 0
    table = pd.read_csv(tmp_path / "R" / "masking_table.csv")
    assert "model" in table.columns and sorted(table["model"]) == ["tiny-copy", "tiny-copy", "tiny-qwen2-vl",
                                                                   "tiny-qwen2-vl"]  # accuracy and em each
    # The case: a model at 0.0 and one at 1.0 stay 0.0 and 1.0 (no 0.5 "mean over seeds").
    frame = pd.DataFrame([{"model": m, "dataset": "passkey", "task": "image", "head_set": "none", "k": 0,
                           "seed": 0, "metric": "accuracy", "value": v, "n": 4} for m, v in (("a", 0.0), ("b", 1.0))])
    (tmp_path / "mixed").mkdir()
    frame.to_csv(tmp_path / "mixed" / "masking.csv", index=False)
    flat = tables.flat(tables.pivot(tables.load_results(tmp_path / "mixed" / "masking.csv")))
    assert flat.set_index("model")["none"].to_dict() == {"a": 0.0, "b": 1.0}
    # Without --results the report reads no results folder, even one in the working directory.
    shutil.copytree(out, tmp_path / "cwd" / "results")
    monkeypatch.chdir(tmp_path / "cwd")
    assert report_main(["--scores", str(scores), "--out", str(tmp_path / "R2")]) == 0
    assert not (tmp_path / "R2" / "masking_table.csv").exists()


# ---------------------------------------------------------------- 2. reruns never mix settings


def test_item2_reruns_with_other_settings_are_refused(tiny_model_dir, tmp_path):
    data = tmp_path / "passkey"
    base = ["step1_passkey.py", "--n", "1", "--lengths", "64", "--out", str(data)]
    assert script(*base).returncode == 0
    before = (data / "samples.jsonl").read_bytes()
    for extra in (["--digits", "7"], ["--seed", "1"]):
        result = script(*base, *extra)
        assert result.returncode != 0 and "Traceback" not in result.stderr
        (line,) = error_lines(result.stderr)
        assert line.startswith("error: ") and (extra[0][2:] + "=") in line
        assert (data / "samples.jsonl").read_bytes() == before
    assert script(*base).returncode == 0  # the same settings resume
    # step2: scores made from one dataset are not resumed with another.
    niah = tmp_path / "niah"
    assert script("step1_niah.py", "--n", "1", "--lengths", "64", "--out", str(niah)).returncode == 0
    common = ["--model_id", str(tiny_model_dir), "--out", str(tmp_path / "scores"), "--max_new_tokens", "1"]
    assert step2_main("text", [*common, "--data", str(data)]) in (0, EXIT_EMPTY_RUN)
    meta = (tmp_path / "scores" / "text" / "tiny-qwen2-vl_te.meta.json").read_bytes()
    assert step2_main("text", [*common, "--data", str(niah)]) == 2
    assert (tmp_path / "scores" / "text" / "tiny-qwen2-vl_te.meta.json").read_bytes() == meta
    assert step2_main("text", [*common, "--data", str(niah), "--tag", "niah"]) in (0, EXIT_EMPTY_RUN)
    assert json.loads((tmp_path / "scores" / "text" / "tiny-qwen2-vl-niah_te.meta.json").read_text())[
        "data"] == str(niah)


# ---------------------------------------------------------------- 3. noise is labelled, empty figures omitted


def test_item3_report_of_random_scores_says_so_and_draws_nothing_empty(tmp_path):
    meta = {"model": "tiny", "num_layers": 2, "num_heads": 2, "warning": RANDOM_NOTE}
    zeros = {head: [0.0, 0.0] for head in ("l0_h0", "l0_h1", "l1_h0", "l1_h1")}
    save_scores(tmp_path / "ocr.json", zeros, {**meta, "kind": "ocr"})
    save_scores(tmp_path / "ret.json", zeros, {**meta, "kind": "retrieval"})
    case = tmp_path / "case.json"
    case.write_text(json.dumps({"model": "tiny", "chars": {c: dict.fromkeys(zeros, 0.0) for c in "01"}}))
    result = build_report([tmp_path / "ocr.json", tmp_path / "ret.json"], tmp_path / "R", case=case)
    page = result.index.read_text()
    assert "random weights" in page and "random weights" in result.summary
    assert [p.name for p in result.figures] == ["index.html"]  # all-zero maps: no figure at all
    assert "no figures, every head has the same score (0)" in page
    assert "nan" not in result.summary.lower() and "n/a" in result.summary
    assert result.numbers["pairs"] == {}  # no "top-10 overlap 1.00" between two all-zero maps
    assert "2 of 2 characters have no scored event" in page


# ---------------------------------------------------------------- 4. empty runs fail loudly


def test_item4_a_run_without_events_exits_3_and_step3_names_the_file(tiny_model_dir, passkey_dir, tmp_path,
                                                                     capsys):
    # The tiny model without its random-weights mark: to step2 it is a checkpoint that should answer.
    model = tmp_path / "tiny-qwen2-vl"
    shutil.copytree(tiny_model_dir, model)
    config = json.loads((model / "config.json").read_text())
    del config["ocr_heads_random_weights"]
    (model / "config.json").write_text(json.dumps(config))
    argv = ["--model_id", str(model), "--data", str(passkey_dir), "--out", str(tmp_path), "--n", "1",
            "--max_new_tokens", "1"]
    assert step2_main("image", argv) == EXIT_EMPTY_RUN
    scores = tmp_path / "image" / "tiny-qwen2-vl_fg.json"
    assert json.loads(scores.read_text())["l0_h0"] == []  # written, so it can be inspected
    (line,) = error_lines(capsys.readouterr().err)
    assert line.startswith(f"error: {scores} holds no answer-token events") and "chat template" in line
    assert step3_main(["--scores", str(scores), "--out", str(tmp_path / "heads.json")]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert line == (f"error: {scores} holds no events (its step2 run never scored an answer token): no heads "
                    "can be selected from it")
    assert not (tmp_path / "heads.json").exists()
    # The same run on the marked random model is expected to be empty: files written, a warning, exit 0.
    argv[1], argv[5] = str(tiny_model_dir), str(tmp_path / "random")
    assert step2_main("image", argv) == 0
    assert json.loads((tmp_path / "random" / "image" / "tiny-qwen2-vl_fg.meta.json").read_text())["n_events"] == 0


# ---------------------------------------------------------------- 5. --n means one thing


@pytest.mark.parametrize("command", ["step1_passkey.py", "step2_ocr_retrieval_head.py", "exp_masking.py",
                                     "exp_case.py", "-m ocr_heads.toy.evaluate", "-m ocr_heads.toy.data"])
def test_item5_n_zero_is_an_error_and_every_help_says_what_n_counts(command):
    result = script(*command.split(), "--n", "0")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: argument --n: must be an integer >= 1, got 0")
    help_text = " ".join(script(*command.split(), "--help").stdout.split())
    assert "N, the number of samples to use: N " in help_text


# ---------------------------------------------------------------- 6. no advice to delete


def test_item6_a_mistyped_data_path_says_not_found(tiny_model_dir, passkey_dir, tmp_path, capsys):
    base = ["--datasets", "passkey", "--model_id", str(tiny_model_dir), "--n", "1", "--max_new_tokens", "2",
            "--out", str(tmp_path / "results")]
    assert masking_main([*base, "--data", f"passkey={passkey_dir}"]) == 0
    capsys.readouterr()
    assert masking_main([*base, "--data", f"passkey={passkey_dir}-typo"]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert line.startswith("error: ") and "-typo" in line and "no" in line and "delete" not in line


# ---------------------------------------------------------------- 7. one error style; k is what was masked


def test_item7_one_error_style_and_k_records_the_heads_masked(tiny_model_dir, passkey_dir, tmp_path):
    means = tmp_path / "x_mean.json"
    means.write_text(json.dumps({"l0_h0": 0.5}))
    for scores in (tmp_path / "missing.json", means):
        result = script("-m", "ocr_heads.report", "--scores", str(scores), "--out", str(tmp_path / "R"))
        assert result.returncode == 2 and "Traceback" not in result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("error: ") and str(scores) in line
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "samples.jsonl").write_text('{"id": 1}\nnot json\n{"id": 2}\n')
    result = script("step1_passkey.py", "--n", "1", "--lengths", "64", "--out", str(corrupt))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert error_lines(result.stderr) == [f"error: {corrupt}/samples.jsonl:2 is not valid JSON"]
    two = tmp_path / "two.json"
    two.write_text(json.dumps({"heads": [{"head": "l0_h1", "score": 0.9}, {"head": "l1_h0", "score": 0.5}]}))
    out = tmp_path / "results"
    argv = ["--datasets", "passkey", "--model_id", str(tiny_model_dir), "--data", str(passkey_dir), "--n", "1",
            "--max_new_tokens", "2", "--out", str(out), "--do_masking", "--heads", str(two),
            "--num_of_masking_head", "3"]
    assert masking_main(argv) == 0
    assert {row["k"] for row in read_csv(out / "masking.csv")} == {"2"}
    assert (out / "masking" / "tiny-qwen2-vl" / "passkey_image_top_k2.json").is_file()


# ---------------------------------------------------------------- 8. smaller: spellings, modes, paths, README


def test_item8_flag_spellings_file_modes_notebook_path_and_readme(tmp_path):
    args = step2_parser("image").parse_args(["--model-id", "m", "--data", "d", "--verify_eager",
                                             "--max-new-tokens=3"])
    assert (args.model_id, args.verify_eager, args.max_new_tokens) == ("m", True, 3)
    parser = Parser(prog="p")
    parser.add_argument("--n-eval", type=int)
    assert parser.parse_args(["--n_eval", "2"]).n_eval == 2
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    # The case notebook reads what the demo's exp_case.py run writes: OUT/case/NAME_case.json.
    source = "".join("".join(c["source"]) for c in json.loads((ROOT / "exp_case_fig.ipynb").read_text())["cells"])
    assert "results/demo/results/case/toy-qwen2-vl_case.json" in source and "toy model" in source
    readme = (ROOT / "README.md").read_text()
    assert "design notes" not in readme and "about a minute" not in readme


# ---------------------------------------------------------------- case study from any step2 run


def test_case_study_from_step2_events_groups_them_by_the_character_read(tmp_path):
    from ocr_heads.pipeline.case_study import main as case_main

    scores = tmp_path / "scores" / "image"
    scores.mkdir(parents=True)
    # Two samples, 1 layer x 2 heads. Events: "4" -> [1, 0] and [0, 0]; "7" -> [0.5, 1]; "47" (one token
    # spelling two characters) counts for both.
    records = [{"id": "a", "event_chars": ["4", "7"], "values": [[1.0, 0.0], [0.5, 1.0]]},
               {"id": "b", "event_chars": ["4", "47"], "values": [[0.0, 0.0], [0.5, 0.0]]},
               {"id": "c", "error": "RuntimeError: boom"}]
    (scores / "m_fg.samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    write_json_atomic(scores / "m_fg.meta.json", {"kind": "ocr", "model": "m", "num_layers": 1, "num_heads": 2,
                                                  "warning": RANDOM_NOTE, "alignment": "produce"})
    assert case_main(["--from_step2", str(scores / "m_fg.samples.jsonl"), "--out", str(tmp_path / "r")]) == 0
    case = json.loads((tmp_path / "r" / "case" / "m_case.json").read_text())
    assert case == {"model": "m", "chars": {"4": {"l0_h0": 0.5, "l0_h1": 0.0}, "7": {"l0_h0": 0.5, "l0_h1": 0.5}}}
    meta = json.loads((tmp_path / "r" / "case" / "m_case.meta.json").read_text())
    assert meta["events_per_char"] == {"4": 3, "7": 2} and meta["samples_per_char"] == {"4": 2, "7": 2}
    assert meta["warning"] == RANDOM_NOTE and len(meta["chars_without_events"]) == 34
