"""exp_redirect: the pure rules by hand, and the command end to end on the tiny random model (plumbing only: a
random model has no OCR heads, its rates are noise)."""

import csv
import json

import numpy as np
import pytest

from ocr_heads.experiments.redirect import blank_tiles, outcome, partner, rates
from ocr_heads.pipeline.redirect import main


def test_partner_outcome_rates_by_hand():
    assert partner("48213", 0, [True] * 5) == 1
    assert partner("44213", 0, [True] * 5) == 2  # the next *different* character
    assert partner("48213", 4, [True] * 5) == 0  # cyclic
    assert partner("48213", 0, [True, False, True, True, True]) == 2  # j must have tiles
    assert partner("777", 1, [True] * 3) is None
    assert [outcome(t, "4", "8") for t in (" 8", "4", "x", "")] == ["steered", "kept", "other", "other"]
    assert rates(["steered", "kept", "kept", "other"]) == {"steered": 0.25, "kept": 0.5, "other": 0.25}
    assert rates([]) == {"steered": 0.0, "kept": 0.0, "other": 0.0}


def test_blank_tiles_are_ink_free_and_nearest():
    page = np.full((20, 40), 255, dtype=np.uint8)
    page[0:10, 0:10] = 0  # ink in tile 0
    tiles = np.array([[x, y, x + 10, y + 10] for y in (0, 10) for x in (0, 10, 20, 30)], dtype=float)
    assert blank_tiles(page, tiles, near=[0], count=2) == [1, 4]  # nearest ink-free tiles to tile 0
    assert 0 not in blank_tiles(page, tiles, near=[3], count=8)


def read(path):
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture()
def heads_file(tmp_path):
    path = tmp_path / "heads.json"
    path.write_text(json.dumps(["l2_h1", "l0_h3", "l1_h0"]))
    return path


def test_exp_redirect_end_to_end(tiny_model_dir, passkey_dir, heads_file, tmp_path, capsys):
    out = tmp_path / "r"
    argv = ["--model_id", str(tiny_model_dir), "--heads", str(heads_file), "--data", str(passkey_dir), "--k", "1",
            "2", "--alpha", "0", "1", "--seeds", "0", "--n", "2", "--out", str(out)]
    assert main(argv) == 0
    rows = read(out / "redirect.csv")
    assert {"head_set", "k", "alpha", "seed", "n", "steered", "kept", "other"} <= set(rows[0])
    assert {(r["head_set"], r["k"], r["alpha"]) for r in rows} == {
        (h, k, a) for h in ("top", "random", "blank") for k in ("1", "2") for a in ("0", "1")}
    for row in rows:
        if row["n"] == "0":  # the random model wrote no character right: no rate, said so (not zeros)
            assert [row[name] for name in ("steered", "kept", "other")] == ["", "", ""]
            assert row["note"].startswith("no event")
            continue
        assert abs(sum(float(row[name]) for name in ("steered", "kept", "other")) - 1) < 1e-6
        if row["alpha"] == "0" and row["n"] != "0":  # moving nothing changes nothing: every event stays kept
            assert float(row["kept"]) == 1.0
    assert (out / "redirect.png").is_file()
    log = out / "redirect.samples.jsonl"
    assert len(log.read_text().splitlines()) == 2
    assert main(argv) == 0 and len(log.read_text().splitlines()) == 2  # resumed: nothing redone
    capsys.readouterr()
    assert main([*argv[:-2], "--out", str(out), "--k", "3"]) == 2  # other settings into the same --out
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: ")
    assert main([*argv[:-2], "--out", str(tmp_path / "x"), "--alpha", "1.5"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: --alpha")


def test_a_binding_sliding_window_is_one_error_line(tiny_model_dir, passkey_dir, heads_file, tmp_path, capsys):
    from test_attention_limits import _sliding_copy

    _sliding_copy(tiny_model_dir, tmp_path / "sliding8", window=8)
    argv = ["--model_id", str(tmp_path / "sliding8"), "--heads", str(heads_file), "--data", str(passkey_dir), "--k",
            "2", "--alpha", "1", "--seeds", "0", "--n", "1", "--out", str(tmp_path / "r")]
    heads_file.write_text(json.dumps(["l1_h0", "l2_h1"]))  # heads in the sliding layers
    capsys.readouterr()
    assert main(argv) == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")]
    assert "sliding-window attention (window 8)" in line


def test_report_shows_the_redirect_rates(tmp_path):
    from ocr_heads.report.sections.common import Report
    from ocr_heads.report.sections.experiments import redirect_section

    (tmp_path / "redirect.csv").write_text(
        "model,head_set,k,alpha,seed,n,steered,kept,other,note\n"
        "toy,top,3,1,,10,0.6,0.3,0.1,\ntoy,random,3,1,0,10,0.0,1.0,0.0,\ntoy,random,3,1,1,10,0.2,0.8,0.0,\n")
    out = tmp_path / "report"
    out.mkdir()
    section = redirect_section(tmp_path, Report(out))
    markup = "".join(section.parts)
    assert "0.6" in markup and "0.1" in markup  # top's steered; random's mean over its two seeds
    assert redirect_section(out, Report(out)) is None
