"""The report: hand-checked statistics, every figure written, tables and case study, reference files."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from ocr_heads.report import build_report, load_case, stats
from ocr_heads.report.__main__ import main as report_main
from ocr_heads.report.figures import tick_step
from ocr_heads.scores.files import save_scores

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference_scores"

# Synthetic 2 x 2 fixtures (not model scores). Means: OCR [.5, .2, 0, .1], retrieval [0, .4, .3, .1].
OCR = {"l0_h0": [1.0, 0.0], "l0_h1": [0.2, 0.2], "l1_h0": [0.0, 0.0], "l1_h1": [0.2, 0.0]}
RETRIEVAL = {"l0_h0": [0.0, 0.0], "l0_h1": [0.4, 0.4], "l1_h0": [0.3, 0.3], "l1_h1": [0.2, 0.0]}
META = {"model": "synthetic-2x2", "num_layers": 2, "num_heads": 2}


def test_statistics_by_hand() -> None:
    assert stats.rank([0.5, 0.1, 0.1, 0.9]).tolist() == [3.0, 1.5, 1.5, 4.0]
    assert stats.pearson([0.5, 0.2, 0.0, 0.1], [0.0, 0.4, 0.3, 0.1]) == pytest.approx(-0.07 / np.sqrt(0.014))
    assert stats.spearman([0.5, 0.2, 0.0, 0.1], [0.0, 0.4, 0.3, 0.1]) == pytest.approx(-0.4)
    assert np.isnan(stats.pearson([1, 1, 1], [1, 2, 3]))
    assert stats.jaccard({"a", "b", "c"}, {"b", "c", "d"}) == 0.5
    assert stats.jaccard(set(), set()) == 0.0
    assert stats.top_k_overlap(["a", "b", "c"], ["c", "a", "d"], 2) == 0.5
    assert stats.top_k_overlap(["a", "b"], ["b", "a"], 10) == 1.0  # k capped at the ranking length
    assert stats.cumulative_mass([0.1, 0.3, 0.0, 0.6]).tolist() == pytest.approx([0.6, 0.9, 1.0, 1.0])
    assert stats.heads_for_mass([0.1, 0.3, 0.0, 0.6], 0.5) == 1
    assert stats.heads_for_mass([0.1, 0.3, 0.0, 0.6], 0.9) == 2
    assert stats.score_buckets([0.0, 0.05, 0.1, 0.3, 0.5, 1.0, 0.0, 0.2]) == {
        "0": 0.25,
        "(0, 0.1)": 0.125,
        "[0.1, 0.3)": 0.25,
        "[0.3, 0.5)": 0.125,
        "[0.5, 1]": 0.25,
    }
    similarity = stats.cosine_matrix(np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 0.0]]))
    assert similarity.tolist() == [[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]
    assert [tick_step(n) for n in (12, 16, 28, 32, 80)] == [1, 1, 2, 2, 8]


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    save_scores(tmp_path / "scores" / "ocr.json", OCR, {**META, "kind": "ocr"})
    save_scores(tmp_path / "scores" / "ret.json", RETRIEVAL, {**META, "kind": "retrieval"})
    results = tmp_path / "results"
    results.mkdir()
    rows = ["dataset,task,head_set,k,seed,metric,value,n"]
    rows += [
        "doc,image,top,10,0,anls,0.40,600",
        "doc,image,random,10,1,anls,0.70,600",
        "doc,image,random,10,2,anls,0.80,600",
        "doc,image,none,,0,anls,0.85,600",
    ]
    (results / "masking.csv").write_text("\n".join(rows) + "\n")
    case = tmp_path / "case.json"
    case.write_text(
        json.dumps(
            {
                "model": "synthetic-2x2",
                "chars": {
                    "0": {"l0_h0": 1.0, "l0_h1": 0.0, "l1_h0": 0.0, "l1_h1": 0.0},
                    "1": {"l0_h0": 2.0, "l0_h1": 0.0, "l1_h0": 0.0, "l1_h1": 0.0},
                    "a": {"l0_h0": 0.0, "l0_h1": 0.0, "l1_h0": 0.0, "l1_h1": 0.5},
                },
            }
        )
    )
    return {
        "ocr": tmp_path / "scores" / "ocr.json",
        "ret": tmp_path / "scores" / "ret.json",
        "results": results,
        "case": case,
        "out": tmp_path / "report",
    }


def test_report_writes_every_figure_and_the_numbers(inputs: dict[str, Path]) -> None:
    result = build_report(
        [inputs["ret"], inputs["ocr"]], inputs["out"], results_dir=inputs["results"], case=inputs["case"]
    )
    names = sorted(p.name for p in result.figures)
    assert names == sorted(
        [
            "heatmap_ret.png",
            "heatmap_ocr.png",
            "activation_ret.png",
            "activation_ocr.png",
            "sparsity.png",
            "distinct_ocr__ret.png",
            "layers_ret.png",
            "layers_ocr.png",
            "masking_table.csv",
            "case_heatmaps.png",
            "case_similarity.png",
            "index.html",
        ]
    )
    for path in result.figures:
        assert path.is_file() and path.stat().st_size > 0
    page = result.index.read_text()
    for path in result.figures:
        if path.suffix == ".png":
            assert f'src="{path.name}"' in page  # relative references: the folder can be moved
    pair = result.numbers["pairs"]["ocr__ret"]  # OCR goes first whatever the order given
    assert pair["jaccard"] == 0.5  # {l0_h0, l0_h1, l1_h1} vs {l0_h1, l1_h0, l1_h1}
    assert pair["pearson"] == pytest.approx(-0.07 / np.sqrt(0.014))
    assert pair["spearman"] == pytest.approx(-0.4)
    ocr = result.numbers["files"]["ocr"]
    assert ocr["selected"] == {"documented": ["l0_h0", "l0_h1", "l1_h1"], "authors": ["l0_h0", "l1_h1"]}
    assert ocr["heads_per_layer"] == [2, 1]  # the architectural distribution of the documented heads
    # frequency [.5, 1, 0, .5] vs mean [.5, .2, 0, .1]
    assert ocr["activation"]["pearson"] == pytest.approx(stats.pearson([0.5, 1, 0, 0.5], [0.5, 0.2, 0, 0.1]))
    case = result.numbers["case"]
    assert case["top5"]["0"] == ["l0_h0", "l0_h1", "l1_h0", "l1_h1"]  # zero ties in layer-major order
    assert case["top5"]["a"][0] == "l1_h1"
    assert case["mean_similarity"] == pytest.approx(1 / 3)
    assert "synthetic-2x2 (ocr)" in result.summary and "3/4 heads selected" in result.summary
    assert "Masking table (4 rows)" in result.summary
    table = (inputs["out"] / "masking_table.csv").read_text()
    assert "0.75" in table  # random k=10: mean of seeds 0.70 and 0.80


def test_cli_overrides_and_missing_results(inputs: dict[str, Path], tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert (
        report_main(
            [
                "--scores",
                str(inputs["ocr"]),
                str(inputs["ret"]),
                "--out",
                str(inputs["out"]),
                "--results",
                str(tmp_path / "empty"),
                "--model_name",
                "A,B",
                "--kind",
                "retrieval",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "A (retrieval)" in out and "B (retrieval)" in out
    assert "different models: head identities need not correspond" in out
    assert not (inputs["out"] / "masking_table.csv").exists()
    with pytest.raises(ValueError, match=re.escape("--kind has 3 entries for 2 score files")):
        build_report([inputs["ocr"], inputs["ret"]], inputs["out"], kinds="ocr,ocr,ocr")


def test_case_file_must_cover_the_grid(tmp_path: Path) -> None:
    bad = tmp_path / "case.json"
    bad.write_text(
        json.dumps({"model": "m", "chars": {"0": {"l0_h0": 1.0, "l0_h1": 0.0}, "1": {"l0_h0": 1.0}}})
    )
    with pytest.raises(ValueError, match=re.escape("character '1' does not score the full 1 x 2 head grid")):
        load_case(bad)


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="authors' reference scores not present")
def test_report_on_the_authors_reference_scores(tmp_path: Path) -> None:
    paths = sorted(REFERENCE.glob("*.json"))
    result = build_report(paths, tmp_path)
    files = result.numbers["files"]
    if "Qwen2-VL-2B-Instruct_te_2" in files:
        selected = files["Qwen2-VL-2B-Instruct_te_2"]["selected"]
        assert (len(selected["authors"]), len(selected["documented"])) == (40, 58)
    if "InternVL2-8B_fg_2" in files:
        selected = files["InternVL2-8B_fg_2"]["selected"]
        assert len(selected["authors"]) == len(selected["documented"]) == 44
    assert (tmp_path / "sparsity.png").is_file() and result.index.is_file()
