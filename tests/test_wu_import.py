"""Wu et al.'s released retrieval scores ({"<layer>-<head>": [scores]}) imported into the project's score files."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ocr_heads.scores.files import load_scores
from ocr_heads.scores.wu import main as wu_main

ROOT = Path(__file__).resolve().parents[1]
# Key order, spacing and value style as in Wu et al.'s head_score files (layer-major "L-H" keys, one float per test).
WU_TEXT = ('{"0-0": [0.0, 0.0, 0.0], "0-1": [0.25, 0.0, 0.125], "0-2": [0.0, 0.0, 0.0], '
           '"1-0": [0.0, 0.5, 0.0], "1-1": [1.0, 0.75, 0.5], "1-2": [0.0, 0.0, 0.0625]}')


@pytest.fixture
def wu_file(tmp_path):
    path = tmp_path / "Qwen2-7B-Instruct.json"
    path.write_text(WU_TEXT)
    return path


def test_command_line_import_keeps_values_and_adds_mean_and_sidecar(wu_file, tmp_path):
    out = tmp_path / "scores" / "Qwen2-7B-Instruct_te.json"
    done = subprocess.run([sys.executable, "-m", "ocr_heads.scores.wu", str(wu_file), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    written = json.loads(out.read_text())
    assert list(written) == ["l0_h0", "l0_h1", "l0_h2", "l1_h0", "l1_h1", "l1_h2"]
    assert written["l0_h1"] == [0.25, 0.0, 0.125] and written["l1_h2"] == [0.0, 0.0, 0.0625]
    means = json.loads(out.with_name("Qwen2-7B-Instruct_te_mean.json").read_text())
    assert means["l1_h1"] == 0.75 and means["l0_h1"] == 0.125 and means["l0_h0"] == 0.0  # (1+0.75+0.5)/3, 0.375/3
    meta = json.loads(out.with_name("Qwen2-7B-Instruct_te.meta.json").read_text())
    assert (meta["kind"], meta["model"], meta["num_layers"], meta["num_heads"]) == (
        "retrieval", "Qwen2-7B-Instruct", 2, 3)
    assert meta["source"]["file"] == wu_file.name
    assert meta["source"]["sha256"] == hashlib.sha256(WU_TEXT.encode()).hexdigest()
    scores = load_scores(out)  # the project's own loader reads it as a retrieval score file
    assert scores.kind == "retrieval" and scores.means["l1_h0"] == pytest.approx(0.5 / 3)


@pytest.mark.parametrize(("text", "args", "named"), [
    ('{"0-0": [0.1], "0_1": [0.2], "x": [0.3]}', [], "'0_1'"),
    ('{"l0_h0": [0.1]}', [], "'l0_h0'"),
    (WU_TEXT, ["--layers", "2", "--heads", "2"], "'0-2'"),  # the model has heads 0-1 only
    (WU_TEXT, ["--layers", "1", "--heads", "3"], "'1-0'"),
])
def test_bad_keys_are_one_error_line_naming_the_first(tmp_path, capsys, text, args, named):
    source = tmp_path / "wu.json"
    source.write_text(text)
    out = tmp_path / "out.json"
    assert wu_main([str(source), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and named in err[0]
    assert not out.exists()


def test_model_id_gives_the_shape(wu_file, tmp_path, capsys):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "qwen2", "num_hidden_layers": 2,
                                                   "num_attention_heads": 2}))
    assert wu_main([str(wu_file), "--out", str(tmp_path / "a.json"), "--model_id", str(model)]) == 2
    assert "'0-2'" in capsys.readouterr().err
    (model / "config.json").write_text(json.dumps({"llm_config": {"num_hidden_layers": 2, "num_attention_heads": 3}}))
    assert wu_main([str(wu_file), "--out", str(tmp_path / "a.json"), "--model_id", str(model)]) == 0
    assert json.loads((tmp_path / "a.meta.json").read_text())["model"] == "model"


def test_another_file_into_the_same_out_is_refused(wu_file, tmp_path, capsys):
    out = tmp_path / "out.json"
    assert wu_main([str(wu_file), "--out", str(out)]) == 0
    first = out.read_bytes()
    assert wu_main([str(wu_file), "--out", str(out)]) == 0 and out.read_bytes() == first  # same file: same bytes
    other = tmp_path / "other.json"
    other.write_text(WU_TEXT.replace("0.25", "0.5"))
    capsys.readouterr()
    assert wu_main([str(other), "--out", str(out)]) == 2
    assert "holds other scores" in capsys.readouterr().err and out.read_bytes() == first
