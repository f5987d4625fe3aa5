"""The paper's sparsity comparison: a VLM's OCR heads beside its base LLM's retrieval heads (here Wu et al.'s format,
imported), in the notebook's buckets (0, ≤0.1, ≤0.3, ≤0.5, ≤1) and the share above 0.1."""

import json

import pytest
from PIL import Image

from ocr_heads.report import stats
from ocr_heads.report.__main__ import main as report_main
from ocr_heads.report.base_llm import known_pairs, paper_share, parse_pair
from ocr_heads.report.build import build_report
from ocr_heads.scores.files import load_scores, save_scores
from ocr_heads.scores.wu import main as wu_main

# 2 layers x 4 heads. OCR means: 0, 0, 0.05, 0.1 | 0.2, 0.3, 0.45, 0.9 -> buckets 0: 2, ≤0.1: 2, ≤0.3: 2, ≤0.5: 1,
# ≤1: 1 (of 8); above 0.1: 4 of 8 = 50 %.
OCR = {"l0_h0": [0.0, 0.0], "l0_h1": [0.0], "l0_h2": [0.1, 0.0], "l0_h3": [0.1],
       "l1_h0": [0.2], "l1_h1": [0.3, 0.3], "l1_h2": [0.45], "l1_h3": [0.9, 0.9]}
# Wu et al.'s layout. Means: 0, 0, 0, 0 | 0, 0.05, 0.25, 0.6 -> 0: 5, ≤0.1: 1, ≤0.3: 1, ≤0.5: 0, ≤1: 1; above 0.1: 2/8.
WU = {"0-0": [0.0, 0.0], "0-1": [0.0, 0.0], "0-2": [0.0, 0.0], "0-3": [0.0, 0.0],
      "1-0": [0.0, 0.0], "1-1": [0.1, 0.0], "1-2": [0.5, 0.0], "1-3": [0.6, 0.6]}


def test_paper_buckets_put_the_bound_in_the_lower_bucket():
    assert stats.paper_buckets([0.0, 0.0, 0.05, 0.1, 0.2, 0.3, 0.45, 0.9]) == {
        "0": 0.25, "≤0.1": 0.25, "≤0.3": 0.25, "≤0.5": 0.125, "≤1": 0.125}
    assert stats.share_above([0.0, 0.1, 0.1000001, 0.5]) == 0.5
    assert paper_share("Qwen2-VL-7B-Instruct") == 8.7 and paper_share("internlm2_5-7b-chat") == 2.9
    assert paper_share("Qwen2.5-VL-7B-Instruct") is None
    with pytest.raises(ValueError, match="VLM_SCORE=LLM_SCORE"):
        parse_pair("only-one.json")


@pytest.fixture
def files(tmp_path):
    ocr = tmp_path / "Qwen2-VL-2B-Instruct_fg.json"
    save_scores(ocr, OCR, {"kind": "ocr", "model": "Qwen2-VL-2B-Instruct", "num_layers": 2, "num_heads": 4})
    wu = tmp_path / "Qwen2-1.5B-Instruct.json"
    wu.write_text(json.dumps(WU))
    imported = tmp_path / "scores" / "Qwen2-1.5B-Instruct_te.json"
    assert wu_main([str(wu), "--out", str(imported), "--layers", "2", "--heads", "4"]) == 0
    return ocr, imported


def test_an_imported_wu_file_stands_beside_the_ocr_file(files, tmp_path, capsys):
    ocr, imported = files
    out = tmp_path / "report"
    assert report_main(["--scores", str(ocr), "--base_llm", f"{ocr}={imported}", "--out", str(out)]) == 0
    assert "sparsity: Qwen2-VL-2B-Instruct (ocr) 50.0% of heads > 0.1, base LLM Qwen2-1.5B-Instruct (retrieval) " \
           "25.0%" in capsys.readouterr().out
    picture = Image.open(out / "sparsity_base_llm.png")
    assert picture.width > 1000 and picture.height > 400  # two panels, drawn
    index = (out / "index.html").read_text()
    assert "sparsity_base_llm.png" in index and "<td>62.5</td>" in index  # the Wu file's 0 bucket: 5 of 8


def test_the_figures_numbers_and_the_paper_pairs(files, tmp_path):
    ocr, imported = files
    result = build_report([ocr, imported], tmp_path / "auto")  # no pairs given: found by the paper's mapping
    (entry,) = result.numbers["base_llm_sparsity"]
    assert entry["vlm"]["buckets"] == {"0": 0.25, "≤0.1": 0.25, "≤0.3": 0.25, "≤0.5": 0.125, "≤1": 0.125}
    assert entry["base_llm"]["buckets"] == {"0": 0.625, "≤0.1": 0.125, "≤0.3": 0.125, "≤0.5": 0.0, "≤1": 0.125}
    assert (entry["vlm"]["share_above_0.1"], entry["base_llm"]["share_above_0.1"]) == (0.5, 0.25)
    assert (entry["vlm"]["paper_share"], entry["base_llm"]["paper_share"]) == (16.4, 5.7)
    assert (tmp_path / "auto" / "sparsity_base_llm.png").is_file()
    # Another VLM's OCR file is not paired with Qwen2-1.5B; without a pair there is no comparison figure.
    other = load_scores(ocr)
    other.model = "Qwen2.5-VL-3B"
    assert known_pairs([other, load_scores(imported)]) == []
    result = build_report([ocr, imported], tmp_path / "none", models="Qwen2.5-VL-3B,Qwen2-1.5B-Instruct")
    assert "base_llm_sparsity" not in result.numbers and not (tmp_path / "none" / "sparsity_base_llm.png").exists()


def test_a_pair_in_the_wrong_order_is_refused(files, tmp_path, capsys):
    ocr, imported = files
    assert report_main(["--scores", str(ocr), "--base_llm", f"{imported}={ocr}", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "expected an OCR score file" in err[0]
