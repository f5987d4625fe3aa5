"""exp_masking --mask_mode: the head set cut off the image, the answer's evidence or the text, end to end on the tiny
random model (its answers are noise: plumbing and exactness only), against edits built here by hand."""

import csv
import json

import pytest
from test_experiments import STEP3

from ocr_heads.attention.reweighting import KeySet, Reweight, reweighted_heads
from ocr_heads.experiments.base import ADDED_COLUMNS, CSV_COLUMNS
from ocr_heads.experiments.data import example_inputs
from ocr_heads.pipeline.experiment import masking_main
from ocr_heads.scores.geometry import covering_tiles
from ocr_heads.tasks import get_task

HEADS = ["l0_h3", "l2_h1"]


@pytest.fixture()
def heads_file(tmp_path):
    path = tmp_path / "heads.json"
    path.write_text(json.dumps(STEP3))
    return path


def read_csv(path):
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def common(model_dir, data, out, heads, *extra):
    return ["--datasets", "passkey", "--task", "image", "--model_id", str(model_dir), "--data", str(data), "--n", "2",
            "--max_new_tokens", "4", "--out", str(out), "--heads", str(heads), "--num_of_masking_head", "2", *extra]


def hand_keys(mode, example, inputs):
    """The key set and rule of each mode, written out from the inputs' image runs and the step1 boxes."""
    image = [p for run in inputs.image_tokens for p in range(run.start, run.start + len(run.tile_boxes))]
    if mode == "image_keys":
        return Reweight("block"), image
    if mode == "text_keys":
        return Reweight("keep"), [0, *image]
    evidence = set()
    for page, boxes in example.meta["evidence"].items():
        for run in inputs.image_tokens:
            if run.page == int(page):
                evidence.update(run.start + i for box in boxes for i in covering_tiles(box, run.tile_boxes))
    return Reweight("block"), sorted(evidence)


@pytest.mark.parametrize("mode", ["image_keys", "evidence_keys", "text_keys"])
def test_mask_mode_predictions_equal_the_hand_built_edit(mode, tiny_adapter, tiny_model_dir, passkey_dir, heads_file,
                                                        tmp_path):
    out = tmp_path / "r"
    argv = common(tiny_model_dir, passkey_dir, out, heads_file, "--do_masking", "--mask_mode", mode)
    assert masking_main(argv) == 0
    run_dir = out / "masking" / tiny_adapter.name
    summary = json.loads((run_dir / f"passkey_image_top_k2_{mode}.json").read_text())
    assert summary["config"]["mask_mode"] == mode and summary["config"]["heads"] == HEADS
    rows = read_csv(out / "masking.csv")
    assert list(rows[0]) == [*CSV_COLUMNS, *ADDED_COLUMNS, "mask_mode"] and {r["mask_mode"] for r in rows} == {mode}
    for example, recorded in zip(get_task("passkey").examples(passkey_dir, n=2), summary["predictions"], strict=True):
        inputs = example_inputs(tiny_adapter, example)
        rule, keys = hand_keys(mode, example, inputs)
        assert keys
        with reweighted_heads(tiny_adapter, HEADS, rule, KeySet.shared(keys)):
            generated = tiny_adapter.generate(inputs, 4)
        assert recorded["prediction"] == tiny_adapter.decode(generated).strip()
    # Resumable: a rerun adds no sample and no row.
    log = run_dir / f"passkey_image_top_k2_{mode}.samples.jsonl"
    assert masking_main(argv) == 0
    assert len(log.read_text().splitlines()) == 2 and len(read_csv(out / "masking.csv")) == 2


def test_per_sample_key_sets_follow_left_padding(tiny_model_dir, passkey_dir, heads_file, tmp_path):
    """Batches of prompts of different lengths (left-padded) give the predictions of one sample at a time."""
    summaries = []
    for batch in ("1", "3"):
        out = tmp_path / f"b{batch}"
        argv = common(tiny_model_dir, passkey_dir, out, heads_file, "--do_masking", "--mask_mode", "evidence_keys",
                      "--is_all_random", "--batch_size", batch)
        argv[argv.index("--n") + 1] = "3"
        assert masking_main(argv) == 0
        (path,) = (out / "masking").rglob("passkey_image_random_k2_seed1234_evidence_keys.json")
        summaries.append(json.loads(path.read_text())["predictions"])
    assert summaries[0] == summaries[1]


def test_baseline_is_output_and_old_csv_layout_is_upgraded(tiny_model_dir, passkey_dir, heads_file, tmp_path,
                                                          caplog):
    out = tmp_path / "r"
    out.mkdir()
    old = {"model": "older", "protocol": "paper", "dataset": "passkey", "task": "image", "head_set": "top", "k": "2",
           "seed": "1234", "metric": "em", "value": "0.5", "n": "2", "note": ""}
    with (out / "masking.csv").open("w", newline="") as handle:  # written before mask_mode existed
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerow(old)
    # --mask_mode without --do_masking: the unmodified model, filed as output under today's stem.
    assert masking_main(common(tiny_model_dir, passkey_dir, out, heads_file, "--mask_mode", "image_keys")) == 0
    rows = read_csv(out / "masking.csv")
    assert rows[0] == {**old, "prompt": "direct", "selection": "documented", "mask_mode": "output"}
    assert [(r["head_set"], r["mask_mode"]) for r in rows[1:]] == [("none", "output")] * 2
    assert (out / "masking" / tiny_model_dir.name / "passkey.json").is_file()


def test_evidence_keys_needs_evidence(tiny_model_dir, heads_file, tmp_path, capsys):
    argv = ["--datasets", "nq", "--task", "text", "--model_id", str(tiny_model_dir), "--data", "nq=/nowhere",
            "--heads", str(heads_file), "--out", str(tmp_path), "--do_masking", "--mask_mode", "evidence_keys"]
    assert masking_main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and "evidence" in line and "nq" in line


def test_report_gives_each_mask_mode_its_own_head_set_column():
    import pandas as pd

    from ocr_heads.experiments.masking import EXPERIMENT
    from ocr_heads.report.sections.experiments import with_choices_in_head_set

    frame = pd.DataFrame({"head_set": ["none", "top", "top", "random"],
                          "mask_mode": ["output", "output", "image_keys", None]})
    shown = with_choices_in_head_set(frame, EXPERIMENT.choices)
    assert shown["head_set"].tolist() == ["none", "top", "top [image_keys]", "random"]
    assert "mask_mode" not in shown


def test_demo_digit_rates_by_hand():
    from ocr_heads.demo import digit_rates

    summary = {"predictions": [{"prediction": "12345", "golds": ["12345"]}, {"prediction": "1299", "golds": ["12345"]}]}
    assert digit_rates(summary) == [1.0, 1.0, 0.5, 0.5, 0.5]  # "1299": 3rd and 4th wrong, 5th missing
