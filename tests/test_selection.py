"""Head selection by both rules, checked by hand and against the authors' released head list."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import step3_extracted_heads
from ocr_heads.scores.files import load_scores, save_scores
from ocr_heads.scores.selection import gated_scores, passes, select_heads, top_k_heads

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "reference_scores"

# mean / non-zero fraction / zero fraction, by hand:
PER_HEAD = {
    "l0_h0": [1.0, 0.0, 0.5, 0.5],  # 0.5  / 0.75 / 0.25 -> documented yes, authors yes
    "l0_h1": [0.2, 0.2, 0.2, 0.2],  # 0.2  / 1.0  / 0.0  -> documented yes, authors NO (no zeros)
    "l1_h0": [0.0] * 9 + [0.9],  # 0.09 / 0.1  / 0.9  -> neither (mean below 0.1)
    "l1_h1": [0.0] * 9 + [1.0],  # 0.1  / 0.1  / 0.9  -> both (both thresholds met exactly)
}
META = {"kind": "ocr", "model": "tiny-test-model", "num_layers": 2, "num_heads": 2}

# Their 40 heads for Qwen2-VL-2B text retrieval (authors' rule), ranked by mean.
AUTHORS_QWEN2B_TE = (
    "l26_h9 l22_h6 l16_h1 l19_h1 l20_h2 l23_h5 l21_h8 l17_h5 l17_h7 l1_h5 l17_h9 l24_h1 l19_h5 l14_h1 "
    "l26_h10 l22_h3 l24_h9 l19_h0 l13_h6 l15_h3 l27_h10 l22_h9 l10_h5 l4_h10 l22_h5 l9_h2 l17_h8 l7_h6 "
    "l16_h7 l17_h11 l18_h0 l17_h6 l24_h6 l26_h7 l0_h2 l23_h9 l19_h8 l18_h5 l22_h8 l9_h4"
).split()


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    save_scores(tmp_path / "tiny.json", PER_HEAD, META)
    return tmp_path / "tiny.json"


def test_both_rules_by_hand(tiny: Path) -> None:
    scores = load_scores(tiny)
    documented = select_heads(scores, "documented")
    assert [(h.head, h.score, h.frequency) for h in documented] == [
        ("l0_h0", 0.5, 0.75),
        ("l0_h1", pytest.approx(0.2), 1.0),
        ("l1_h1", pytest.approx(0.1), 0.1),
    ]
    assert [h.head for h in select_heads(scores, "authors")] == ["l0_h0", "l1_h1"]
    # thresholds are parameters
    assert [h.head for h in select_heads(scores, "documented", min_score=0.3)] == ["l0_h0"]
    assert [h.head for h in select_heads(scores, "documented", min_frequency=0.8)] == ["l0_h1"]
    assert [h.head for h in select_heads(scores, "authors", min_frequency=0.5)] == ["l1_h1"]


def test_edge_cases_of_the_rules() -> None:
    assert not passes([], "documented") and not passes([], "authors")
    # authors' zero test is strict: exactly 10% zeros is not enough
    assert not passes([0.0] + [0.5] * 9, "authors")
    assert passes([0.0] + [0.5] * 8, "authors")
    # their zero count runs in float32: a value that underflows there counts as a zero
    assert passes([1e-50] * 2 + [0.5] * 8, "authors")
    with pytest.raises(
        ValueError, match=re.escape("unknown rule 'paper'; choose one of documented, authors")
    ):
        passes([1.0], "paper")


def test_gated_scores_and_top_k_keep_layer_major_ties(tmp_path: Path) -> None:
    save_scores(
        tmp_path / "t.json",
        {"l0_h0": [0.3, 0.0], "l0_h1": [0.3, 0.3], "l1_h0": [0.3, 0.0], "l1_h1": [0.1, 0.0]},
        META,
    )
    scores = load_scores(tmp_path / "t.json")
    assert gated_scores(scores, "authors") == pytest.approx(
        {"l0_h0": 0.15, "l0_h1": 0.0, "l1_h0": 0.15, "l1_h1": 0.05}
    )
    assert top_k_heads(scores, 2, "authors") == ["l0_h0", "l1_h0"]
    assert top_k_heads(scores, 1, "documented") == ["l0_h1"]


def test_cli_contract(tiny: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "heads.json"
    assert step3_extracted_heads.main(["--scores", str(tiny), "--rule", "authors", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["heads"] == [
        {"head": "l0_h0", "score": 0.5, "frequency": 0.75},
        {"head": "l1_h1", "score": 0.1, "frequency": 0.1},
    ]
    assert (record["rule"], record["kind"], record["model"]) == ("authors", "ocr", "tiny-test-model")
    assert "2 heads selected by the authors rule" in capsys.readouterr().out


def test_cli_seed_readme_style_resolves_paths(tmp_path: Path) -> None:
    save_scores(tmp_path / "scores" / "text" / "Tiny-VL_te.json", PER_HEAD, {**META, "kind": "retrieval"})
    save_scores(tmp_path / "scores" / "image" / "Tiny-VL_fg.json", PER_HEAD, META)
    root = str(tmp_path / "scores")
    step3_extracted_heads.main(["--te_fg_cg", "te", "--model_id", "org/Tiny-VL", "--scores_dir", root])
    step3_extracted_heads.main(
        [
            "--te_fg_cg",
            "fg",
            "--model_id",
            str(tmp_path / "models" / "Tiny-VL"),
            "--scores_dir",
            root,
            "--rule",
            "authors",
            "--num_layers",
            "2",
            "--num_heads",
            "2",
        ]
    )
    heads = tmp_path / "scores" / "heads"
    assert sorted(p.name for p in heads.iterdir()) == [
        "Tiny-VL_fg_authors.json",
        "Tiny-VL_te_documented.json",
    ]
    assert len(json.loads((heads / "Tiny-VL_te_documented.json").read_text())["heads"]) == 3


def test_cli_head_count_mismatch_is_a_clear_error(tiny: Path, tmp_path: Path, capsys) -> None:
    argv = ["--scores", str(tiny), "--out", str(tmp_path / "o.json"), "--num_heads", "12"]
    assert step3_extracted_heads.main(argv) == 2
    assert f"error: {tiny} has 2 heads but the model has 12: wrong file" in capsys.readouterr().err


def test_cli_config_check_reads_a_local_model_config(tiny: Path, tmp_path: Path, capsys) -> None:
    from transformers import Qwen2VLConfig

    model_dir = tmp_path / "tiny-qwen"
    Qwen2VLConfig(text_config={"num_hidden_layers": 3, "num_attention_heads": 2}).save_pretrained(model_dir)
    argv = ["--scores", str(tiny), "--out", str(tmp_path / "o.json"), "--model_id", str(model_dir)]
    assert step3_extracted_heads.main(argv) == 2
    assert "has 2 layers but the model has 3" in capsys.readouterr().err


def test_cli_help_names_inputs_and_outputs() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "step3_extracted_heads.py"), "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    for text in ("--scores", "--te_fg_cg", "--rule", "--out", "scores/heads/NAME_{fg|te}_{rule}.json"):
        assert text in result.stdout


@pytest.mark.skipif(
    not (REFERENCE / "Qwen2-VL-2B-Instruct_te_2.json").is_file(), reason="reference scores absent"
)
def test_authors_rule_gives_exactly_their_40_heads(tmp_path: Path) -> None:
    out = tmp_path / "heads.json"
    step3_extracted_heads.main(
        [
            "--scores",
            str(REFERENCE / "Qwen2-VL-2B-Instruct_te_2.json"),
            "--rule",
            "authors",
            "--out",
            str(out),
        ]
    )
    heads = [entry["head"] for entry in json.loads(out.read_text())["heads"]]
    assert heads == AUTHORS_QWEN2B_TE
    documented = select_heads(load_scores(REFERENCE / "Qwen2-VL-2B-Instruct_te_2.json"), "documented")
    assert len(documented) == 58
    # the 18 extra heads are the always-on ones the zero test drops, e.g. the 0.995 "same-token" heads
    assert {"l0_h3", "l8_h1", "l12_h11", "l27_h11"} <= {h.head for h in documented} - set(AUTHORS_QWEN2B_TE)


@pytest.mark.skipif(not (REFERENCE / "InternVL2-8B_fg_2.json").is_file(), reason="reference scores absent")
def test_internvl_ocr_heads_agree_under_both_rules() -> None:
    scores = load_scores(REFERENCE / "InternVL2-8B_fg_2.json")
    authors, documented = select_heads(scores, "authors"), select_heads(scores, "documented")
    assert len(authors) == len(documented) == 44
    assert [h.head for h in authors[:3]] == ["l9_h0", "l7_h4", "l7_h6"]  # l7_h4/l7_h6 tie: layer-major order


def test_cli_scores_with_wrong_keys_or_values_is_a_clear_error(tmp_path: Path, capsys) -> None:
    bad_keys = tmp_path / "bad_keys.json"
    bad_keys.write_text(json.dumps({"layer0": [1, 0]}))
    assert step3_extracted_heads.main(["--scores", str(bad_keys), "--out", str(tmp_path / "o.json")]) == 2
    assert "key 'layer0' is not a head name" in capsys.readouterr().err
    bad_values = tmp_path / "bad_values.json"
    bad_values.write_text(json.dumps({"l0_h0": ["x"]}))
    assert step3_extracted_heads.main(["--scores", str(bad_values), "--out", str(tmp_path / "o.json")]) == 2
    assert re.match(r"^error: .*l0_h0", capsys.readouterr().err)
    assert not (tmp_path / "o.json").exists()


def test_frequency_aggregation_by_hand(tiny: Path) -> None:
    """--aggregate frequency: a head's score is the share of its events above the threshold; the rules gate and rank
    on it. Shares above 0.4: l0_h0 3/4, l0_h1 0/4, l1_h0 1/10, l1_h1 1/10 (l1_h0's mean, 0.09, fails the mean)."""
    scores = load_scores(tiny)
    ranked = select_heads(scores, "documented", aggregate="frequency", event_threshold=0.4)
    assert [(h.head, h.score, h.frequency) for h in ranked] == [
        ("l0_h0", 0.75, 0.75), ("l1_h0", 0.1, 0.1), ("l1_h1", 0.1, 0.1)]  # ties stay layer-major
    # Threshold 0: the activation frequency itself; the always-on l0_h1 comes first.
    assert [(h.head, h.score) for h in select_heads(scores, aggregate="frequency")][:2] == [("l0_h1", 1.0),
                                                                                            ("l0_h0", 0.75)]
    assert top_k_heads(scores, 2, aggregate="frequency") == ["l0_h1", "l0_h0"]
    assert top_k_heads(scores, 2) == ["l0_h0", "l0_h1"]  # by the mean: 0.5, 0.2
    assert gated_scores(scores, "authors", aggregate="frequency", event_threshold=0.4) == {
        "l0_h0": 0.75, "l0_h1": 0.0, "l1_h0": 0.1, "l1_h1": 0.1}  # l0_h1 has no zero: the authors' gate drops it
    with pytest.raises(ValueError, match="unknown aggregate 'median'"):
        passes([1.0], aggregate="median")


def test_step3_ranks_by_frequency_when_asked(tiny: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "heads.json"
    assert step3_extracted_heads.main(["--scores", str(tiny), "--aggregate", "frequency", "--event_threshold", "0.4",
                                       "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert (record["aggregate"], record["event_threshold"]) == ("frequency", 0.4)
    assert [h["head"] for h in record["heads"]] == ["l0_h0", "l1_h0", "l1_h1"]
    assert "ranked by the share of events above 0.4" in capsys.readouterr().out
    assert step3_extracted_heads.main(["--scores", str(tiny), "--out", str(out)]) == 0
    assert "aggregate" not in json.loads(out.read_text())  # the mean's head lists keep their layout
    help_text = subprocess.run([sys.executable, "step3_extracted_heads.py", "--help"], capture_output=True, text=True,
                               cwd=ROOT, check=True).stdout
    assert "--aggregate {mean,frequency}" in help_text and "--event_threshold" in help_text
