"""exp_masking --prompt cot, --grid, --record_reading, --selection authors and the CSV's added columns, on the tiny
random model (its answers are noise: these tests check plumbing and recorded values, never findings)."""

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from ocr_heads.experiments.base import ADDED_COLUMNS, CSV_COLUMNS
from ocr_heads.experiments.reading import reading_record, reading_rows
from ocr_heads.experiments.run import RunConfig, csv_rows, replace_csv_rows
from ocr_heads.pipeline.experiment import build_parser, masking_main
from ocr_heads.scores.files import ScoreFile
from ocr_heads.scores.selection import released_masking_ranking
from ocr_heads.tasks.prompting import COT_INSTRUCTION, RECONSTRUCTED

IMAGE_HEADS = {"heads": [{"head": "l1_h2", "score": 0.5, "frequency": 0.6},
                         {"head": "l0_h3", "score": 0.7, "frequency": 0.9}]}
TEXT_HEADS = {"heads": [{"head": "l0_h1", "score": 0.5, "frequency": 0.6},
                        {"head": "l1_h3", "score": 0.4, "frequency": 0.9}]}


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture()
def head_lists(tmp_path):
    image, text = tmp_path / "fg.json", tmp_path / "te.json"
    image.write_text(json.dumps(IMAGE_HEADS))
    text.write_text(json.dumps(TEXT_HEADS))
    return [f"image={image}", f"text={text}"]


def test_help_shows_the_prompt_contract():
    text = build_parser("masking").format_help()
    assert "--prompt direct|cot" in text and "--grid" in text and "--record_reading" in text
    assert "--selection" in text and RECONSTRUCTED in text
    assert " ".join(COT_INSTRUCTION.split()) in " ".join(text.split())  # the template itself, once, in --help
    assert "PYTHONHASHSEED" in text


def test_reading_record_hand_built():
    # 2 steps, 2 layers, 4 heads; image tokens at positions 10..13, the evidence at 12.
    argmax = np.zeros((2, 2, 4), dtype=np.int64)
    argmax[0, 1, 2], argmax[1, 1, 2] = 12, 3  # l1_h2: on the evidence, then on a text token
    argmax[0, 0, 3], argmax[1, 0, 3] = 11, 13  # l0_h3: on the page (not the evidence) both times
    image = np.zeros((2, 2, 4))
    image[:, 1, 2], image[:, 0, 3] = [0.9, 0.2], [0.5, 0.6]
    evidence = np.zeros((2, 2, 4))
    evidence[:, 1, 2] = [0.7, 0.1]
    record = reading_record(argmax, {"image": image, "evidence": evidence}, ["l1_h2", "l0_h3"], {10, 11, 12, 13},
                            {12}, "tiles")
    assert record["argmax_on_image"] == [[True, True], [False, True]]
    assert record["argmax_on_evidence"] == [[True, False], [False, False]]
    assert record["image_mass"] == [[0.9, 0.5], [0.2, 0.6]]
    assert record["evidence_mass"] == [[0.7, 0.0], [0.1, 0.0]]
    rows = reading_rows("s1", "cot", "image", "top", ["4", "8"], record)
    assert [(r["step"], r["piece"], r["head"], r["argmax_on_image"], r["argmax_on_evidence"]) for r in rows] == [
        (0, "4", "l1_h2", 1, 1), (0, "4", "l0_h3", 1, 0), (1, "8", "l1_h2", 0, 0), (1, "8", "l0_h3", 1, 0)]
    unknown = reading_record(argmax, {"image": image}, ["l1_h2"], {10, 11, 12, 13}, set(), "")
    assert "argmax_on_evidence" not in unknown
    assert reading_rows("s1", "direct", "image", "none", ["4"], unknown)[0]["argmax_on_evidence"] == ""


def test_released_masking_ranking_hand_built():
    # Zero fractions: l0_h0 0/4 (fails the authors' zero-fraction test), l0_h1 2/4, l1_h0 1/4, l1_h1 4/4.
    per_head = {"l0_h0": [0.9, 0.9, 0.9, 0.9], "l0_h1": [0.0, 0.0, 0.4, 0.4], "l1_h0": [0.0, 0.04, 0.04, 0.04],
                "l1_h1": [0.0, 0.0, 0.0, 0.0]}
    scores = ScoreFile(None, per_head, {h: sum(v) / 4 for h, v in per_head.items()}, None, None, 2, 2)
    # top k: every head passing the zero-fraction test, by mean (0.2, 0.03, 0), no minimum score
    assert released_masking_ranking(scores, "top") == ["l0_h1", "l1_h0", "l1_h1"]
    # random outside the list: their step3 list (min score 0.1) is what is avoided
    assert released_masking_ranking(scores, "random_disjoint") == ["l0_h1"]


def test_added_columns_extend_an_older_csv(tmp_path):
    path = tmp_path / "masking.csv"
    old = [{"model": "M", "protocol": "paper", "dataset": "doc", "task": "image", "head_set": head_set, "k": k,
            "seed": "1", "metric": "anls", "value": "0.5", "n": "4", "note": ""}
           for head_set, k in (("none", "0"), ("top", "2"), ("random", "2"))]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(old)
    rerun = RunConfig("masking", "m", "doc", "image", "top", 2, 1, protocol="paper")
    replace_csv_rows(path, csv_rows(rerun, {"anls": 0.25}, 8, "M"), "masking")
    cot = RunConfig("masking", "m", "doc", "image", "top", 2, 1, protocol="paper", prompt="cot")
    replace_csv_rows(path, csv_rows(cot, {"anls": 0.75}, 8, "M"), "masking")
    rows = read_csv(path)
    assert list(rows[0]) == [*CSV_COLUMNS, *ADDED_COLUMNS, "mask_mode"]
    got = [(r["head_set"], r["prompt"], r["selection"], r["value"]) for r in rows]
    # the direct rerun of the old top run replaced it in place; the cot run is a row of its own
    assert got == [("none", "direct", "", "0.5"), ("top", "direct", "documented", "0.250000"),
                   ("random", "direct", "", "0.5"), ("top", "cot", "documented", "0.750000")]
    assert rows[3]["note"] == RECONSTRUCTED


def test_cot_stem_and_config_keep_direct_files_unchanged():
    direct = RunConfig("masking", "m", "doc", "image", "top", 2, 1)
    cot = RunConfig("masking", "m", "doc", "image", "top", 2, 1, prompt="cot", max_new_tokens=256)
    authors = RunConfig("masking", "m", "doc", "image", "top", 2, 1, selection="authors")
    assert (direct.stem, cot.stem, authors.stem) == ("doc_image_top_k2", "doc_image_top_k2_cot",
                                                     "doc_image_top_k2_authors")
    assert RunConfig("masking", "m", "doc", "image", "none", 0, 1, prompt="cot").stem == "doc_cot"
    # a random head set reads no list: the selection does not name it
    assert RunConfig("masking", "m", "doc", "image", "random", 2, 1, selection="authors").stem == \
        "doc_image_random_k2_seed1"
    assert "prompt" not in direct.record() and "prompt" not in direct.identity()
    assert (cot.record()["prompt"], cot.identity()["prompt"], cot.record()["max_new_tokens"]) == ("cot", "cot", 256)


def test_cot_grid_runs_resumes_and_records_reading(tiny_model_dir, passkey_dir, head_lists, tmp_path, caplog):
    out = tmp_path / "results"
    argv = ["--datasets", "passkey", "--data", str(passkey_dir), "--model_id", str(tiny_model_dir), "--n", "1",
            "--prompt", "direct", "cot", "--grid", "--heads", *head_lists, "--num_of_masking_head", "2",
            "--max_new_tokens", "5", "--record_reading", "--out", str(out)]
    with caplog.at_level(logging.WARNING):
        assert masking_main(argv) == 0
    assert "rarely reaches its 'Answer:' line" in caplog.text  # 5 < the CoT floor: warned
    rows = read_csv(out / "masking.csv")
    cells = {(r["prompt"], r["task"], r["head_set"]) for r in rows}
    assert cells == {(p, t, h) for p in ("direct", "cot")
                     for t, h in (("image", "none"), ("image", "top"), ("text", "top"), ("image", "random"))}
    assert all((RECONSTRUCTED in r["note"]) == (r["prompt"] == "cot") for r in rows)
    run_dir = out / "masking" / tiny_model_dir.name
    summary = json.loads((run_dir / "passkey_text_top_k2_cot.json").read_text())
    assert summary["config"]["prompt"] == "cot" and summary["config"]["max_new_tokens"] == 5
    assert summary["config"]["heads"] == ["l0_h1", "l1_h3"] and RECONSTRUCTED in summary["warning"]
    (prediction,) = summary["predictions"]
    assert prediction["answer_rule"] in ("marker", "last_line", "empty") and "output" in prediction
    direct = json.loads((run_dir / "passkey.json").read_text())
    assert "prompt" not in direct["config"] and "output" not in direct["predictions"][0]
    # reading: one row per generated step and reading head, steps = the tokens the sample generated
    log = [json.loads(line) for line in (run_dir / "passkey_image_top_k2_cot.samples.jsonl").read_text().splitlines()]
    reading = read_csv(run_dir / "passkey_image_top_k2_cot.reading.csv")
    steps = len(log[0]["reading"]["pieces"])
    assert 1 <= steps <= 5 and len(reading) == steps * 2
    assert {r["head"] for r in reading} == {"l0_h3", "l1_h2"} and {r["evidence_kind"] for r in reading} == {"tiles"}
    assert all(r["argmax_on_image"] in ("0", "1") and 0.0 <= float(r["image_mass"]) <= 1.0 for r in reading)
    baseline = read_csv(run_dir / "passkey.reading.csv")
    assert {r["head"] for r in baseline} == {"l0_h3", "l1_h2"}  # the unmodified model: the top k of the list read
    assert (run_dir / "passkey.reading.png").stat().st_size > 0
    from ocr_heads.report.build import build_report

    scores = tmp_path / "ocr.json"
    scores.write_text(json.dumps({"l0_h0": [0.5, 0.0], "l0_h1": [0.0, 0.2], "l1_h0": [0.0, 0.0], "l1_h1": [0.1, 0.3]}))
    page = build_report([scores], tmp_path / "report", results_dir=out).index.read_text()
    assert "passkey.reading.png" in page and "side by side; CoT: protocol reconstructed" in page
    # a rerun resumes: nothing new, the same rows
    before = (out / "masking.csv").read_text()
    assert masking_main(argv) == 0
    assert (out / "masking.csv").read_text() == before


def test_selection_authors_reads_the_raw_score_file(tiny_model_dir, passkey_dir, tmp_path, capsys):
    raw = tmp_path / "raw_fg.json"
    # l1_h2 scores highest but is never zero: the released rule drops it; l0_h3 and l1_h0 are taken.
    raw.write_text(json.dumps({f"l{layer}_h{head}": [0.0, 0.0] for layer in range(2) for head in range(4)}
                              | {"l1_h2": [0.9, 0.9], "l0_h3": [0.0, 0.6], "l1_h0": [0.0, 0.2]}))
    out = tmp_path / "results"
    argv = ["--datasets", "passkey", "--data", str(passkey_dir), "--model_id", str(tiny_model_dir), "--n", "1",
            "--max_new_tokens", "2", "--do_masking", "--num_of_masking_head", "2", "--selection", "authors",
            "--heads", str(raw), "--out", str(out)]
    assert masking_main(argv) == 0
    summary = json.loads((out / "masking" / tiny_model_dir.name / "passkey_image_top_k2_authors.json").read_text())
    assert summary["config"]["heads"] == ["l0_h3", "l1_h0"] and summary["config"]["selection"] == "authors"
    assert {r["selection"] for r in read_csv(out / "masking.csv")} == {"authors"}
    step3 = tmp_path / "step3.json"
    step3.write_text(json.dumps(IMAGE_HEADS))
    assert masking_main([*argv[:-4], "--heads", str(step3), "--out", str(out)]) == 2
    assert "needs a raw score file" in capsys.readouterr().err


def test_report_keeps_cot_rows_apart_and_says_reconstructed(tmp_path):
    from ocr_heads.report.build import build_report

    scores = tmp_path / "ocr.json"
    scores.write_text(json.dumps({"l0_h0": [0.5, 0.0], "l0_h1": [0.2, 0.4], "l1_h0": [0.0, 0.0],
                                  "l1_h1": [0.1, 0.3]}))
    results = tmp_path / "results"
    results.mkdir()
    header = ",".join([*CSV_COLUMNS, *ADDED_COLUMNS])
    rows = ["M,paper,doc,image,none,0,1,anls,0.80,4,,direct,", "M,paper,doc,image,none,0,1,anls,0.60,4,"
            f"\"{RECONSTRUCTED}\",cot,", "M,paper,doc,image,top,2,1,anls,0.40,4,,direct,documented",
            f"M,paper,doc,image,top,2,1,anls,0.20,4,\"{RECONSTRUCTED}\",cot,documented"]
    (results / "masking.csv").write_text("\n".join([header, *rows]) + "\n")
    result = build_report([scores], tmp_path / "report", results_dir=results)
    table = (tmp_path / "report" / "masking_table.csv").read_text().splitlines()
    assert table[0] == "model,protocol,dataset,task,metric,prompt,none,top_k2"
    assert [line.split(",")[5:] for line in table[1:]] == [["cot", "0.6", "0.2"], ["direct", "0.8", "0.4"]]
    assert f"Rows with prompt cot (chain of thought): {RECONSTRUCTED}" in result.index.read_text().replace(
        "&#x27;", "'")


def test_decoding_length_defaults_per_prompt(tiny_adapter, tiny_model_dir):
    from ocr_heads.core.kinds import Modality
    from ocr_heads.experiments.registry import get_experiment
    from ocr_heads.pipeline.experiment import _configs

    def lengths(*flags):
        args = build_parser("masking").parse_args(["--datasets", "passkey", "--model_id", str(tiny_model_dir),
                                                   *flags])
        return [(c.prompt, c.max_new_tokens, c.stem) for c in _configs(
            args, get_experiment("masking"), "none", Modality.IMAGE, tiny_adapter, {"passkey": None}, "fp")]

    assert lengths("--prompt", "direct", "cot") == [("direct", 32, "passkey"), ("cot", 256, "passkey_cot")]
    assert lengths("--prompt", "cot", "--max_new_tokens", "100") == [("cot", 100, "passkey_cot")]
    assert lengths() == [("direct", 32, "passkey")]  # today's default, today's files


TOY_MODEL = Path(__file__).resolve().parents[1] / "models" / "toy-qwen2-vl"


@pytest.mark.skipif(not (TOY_MODEL / "MODEL_CARD.md").is_file(), reason="toy checkpoint not present")
def test_toy_cot_outputs_say_the_toy_cannot_reason(tmp_path):
    from ocr_heads.experiments.run import TOY_COT_NOTE
    from ocr_heads.toy.data import write_samples

    write_samples(tmp_path / "data", 1, 1000, "heldout")
    out = tmp_path / "results"
    assert masking_main(["--datasets", "passkey", "--data", str(tmp_path / "data"), "--model_id", str(TOY_MODEL),
                         "--n", "1", "--prompt", "cot", "--out", str(out)]) == 0
    summary = json.loads((out / "masking" / "toy-qwen2-vl" / "passkey_cot.json").read_text())
    assert summary["config"]["max_new_tokens"] == 256  # the cot default, recorded
    assert TOY_COT_NOTE in summary["warning"] and RECONSTRUCTED in summary["warning"]
    assert all(TOY_COT_NOTE in row["note"] for row in read_csv(out / "masking.csv"))


def test_released_ranking_agrees_with_the_released_gated_top_k():
    # top_k_heads(rule="authors") ranks the dict the released exp_masking.py builds (gated_scores): where k heads
    # pass the zero-fraction test, its top k and --selection authors' are the same heads in the same order.
    from ocr_heads.scores.selection import top_k_heads

    rng = np.random.default_rng(7)
    per_head = {f"l{layer}_h{head}": [float(v) if rng.random() < 0.6 else 0.0 for v in rng.random(12)]
                for layer in range(4) for head in range(4)}
    scores = ScoreFile(None, per_head, {h: sum(v) / 12 for h, v in per_head.items()}, None, None, 4, 4)
    ranking = released_masking_ranking(scores, "top")
    assert len(ranking) >= 10
    assert ranking[:10] == top_k_heads(scores, 10, rule="authors")
