"""exp_masking / exp_sink (and exp_case) end to end on the tiny random model, in-process, offline.

The tiny model is random: its answers and metrics are noise; these tests check plumbing only.
"""

import csv
import json

import pytest

from ocr_heads.attention.edits import mask_heads, redistribute_sink_heads
from ocr_heads.experiments.base import ADDED_COLUMNS, CSV_COLUMNS
from ocr_heads.experiments.data import example_inputs, resolve_sources
from ocr_heads.pipeline.experiment import build_parser, masking_main, sink_main
from ocr_heads.scores.selection import choose_heads as select_heads
from ocr_heads.scores.selection import load_head_ranking
from ocr_heads.tasks import get_task

STEP3 = {"heads": [{"head": "l2_h1", "score": 0.5, "frequency": 0.6},
                   {"head": "l0_h3", "score": 0.7, "frequency": 0.9},
                   {"head": "l1_h0", "score": 0.2, "frequency": 0.3}]}


@pytest.fixture()
def heads_file(tmp_path):
    path = tmp_path / "heads.json"
    path.write_text(json.dumps(STEP3))
    return path


@pytest.fixture(scope="module")
def nq_file(tmp_path_factory):
    def ctx(title, text, title_score=0):
        return {"title": title, "text": text, "title_score": title_score}

    records = [{"question": f"what is item {i}", "answers": [f"item {i}"],
                "positive_ctxs": [ctx(f"Item {i}", f"Item {i} is a thing.", 1)],
                "negative_ctxs": [ctx(f"Neg {j}", f"negative passage {j}") for j in range(6)]}
               for i in range(3)]
    path = tmp_path_factory.mktemp("nq") / "nq-dev.json"
    path.write_text(json.dumps(records))
    return path


def read_csv(path):
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


# ---------------------------------------------------------------- head lists and sets


def test_load_head_ranking_formats(tmp_path, heads_file):
    assert load_head_ranking(heads_file) == ["l0_h3", "l2_h1", "l1_h0"]
    raw = tmp_path / "raw.json"
    raw.write_text(json.dumps({"l1_h0": [0.0, 1.0], "l0_h1": [0.5, 0.5], "l0_h0": [0.0, 0.0], "l2_h2": [1.0]}))
    assert load_head_ranking(raw) == ["l2_h2", "l0_h1", "l1_h0", "l0_h0"]  # ties: layer-major order
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(["l1_h2", "l0_h0"]))
    assert load_head_ranking(plain) == ["l1_h2", "l0_h0"]  # the authors' lists: file order
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(["layer3"]))
    with pytest.raises(ValueError, match="not a head name"):
        load_head_ranking(bad)


def test_select_heads():
    ranking = ["l0_h3", "l2_h1", "l1_h0"]
    assert select_heads("none", 0, ranking, 3, 4, 1) == []
    assert select_heads("top", 2, ranking, 3, 4, 1) == ["l0_h3", "l2_h1"]
    first = select_heads("random", 5, ranking, 3, 4, 1234)
    assert first == select_heads("random", 5, ranking, 3, 4, 1234) and len(set(first)) == 5
    assert first != select_heads("random", 5, ranking, 3, 4, 1)
    disjoint = select_heads("random_disjoint", 9, ranking, 3, 4, 1234)
    assert len(set(disjoint)) == 9 and not set(disjoint) & set(ranking)  # the whole pool of 12 - 3
    with pytest.raises(ValueError, match="cannot draw 10"):
        select_heads("random_disjoint", 10, ranking, 3, 4, 1234)
    with pytest.raises(ValueError, match=">= 1"):
        select_heads("top", 0, ranking, 3, 4, 1)


def test_resolve_sources(tmp_path):
    (tmp_path / "DocVQA").mkdir()
    assert resolve_sources(["doc"], None) == {"doc": None}
    assert resolve_sources(["doc", "nq"], [str(tmp_path), "nq=/x/nq.json"]) == {
        "doc": str(tmp_path / "DocVQA"), "nq": "/x/nq.json"}
    assert resolve_sources(["passkey"], ["/data/pk"]) == {"passkey": "/data/pk"}
    with pytest.raises(ValueError, match="NAME=PATH"):
        resolve_sources(["passkey", "nq"], ["/data/pk"])
    with pytest.raises(ValueError, match="not among"):
        resolve_sources(["doc"], ["nq=/x"])


def test_help_lists_the_paper_flags():
    masking = build_parser("masking").format_help()
    for flag in ("--datasets", "--task", "--model_id", "--num_of_masking_head", "--do_masking", "--fine_grained",
                 "--is_all_random", "--no_intersection", "--seed", "--heads", "--data", "--n", "--max_new_tokens",
                 "--out"):
        assert flag in masking
    sink = build_parser("sink").format_help()
    for flag in ("--unmasking", "--beta", "--num_of_masking_head", "--datasets", "--model_id", "--data", "--heads"):
        assert flag in sink
    assert "masking.csv" in masking and "sink.csv" in sink


# ---------------------------------------------------------------- masking end to end


def test_masking_runs_all_head_sets_and_resumes(tiny_adapter, tiny_model_dir, passkey_dir, heads_file, tmp_path):
    out = tmp_path / "results"
    common = ["--datasets", "passkey", "--task", "image", "--model_id", str(tiny_model_dir), "--data",
              str(passkey_dir), "--n", "2", "--max_new_tokens", "4", "--out", str(out), "--heads", str(heads_file),
              "--num_of_masking_head", "2", "--fine_grained"]
    assert masking_main(common) == 0
    assert masking_main([*common, "--do_masking"]) == 0
    assert masking_main([*common, "--do_masking", "--is_all_random"]) == 0
    assert masking_main([*common, "--do_masking", "--is_all_random", "--no_intersection", "--seed", "7"]) == 0

    rows = read_csv(out / "masking.csv")
    assert list(rows[0]) == [*CSV_COLUMNS, *ADDED_COLUMNS, "mask_mode"] and {r["mask_mode"] for r in rows} == {"output"}
    assert [r["head_set"] for r in rows] == ["none"] * 2 + ["top"] * 2 + ["random"] * 2 + ["random_disjoint"] * 2
    assert {r["metric"] for r in rows} == {"accuracy", "em"} and {r["n"] for r in rows} == {"2"}
    assert [r["k"] for r in rows[::2]] == ["0", "2", "2", "2"]

    run_dir = out / "masking" / tiny_adapter.name
    top = json.loads((run_dir / "passkey_image_top_k2.json").read_text())
    assert top["config"]["heads"] == ["l0_h3", "l2_h1"]
    assert top["n"] == 2 and set(top["metrics"]) == {"accuracy", "em"} and "random weights" in top["warning"]
    disjoint = json.loads((run_dir / "passkey_image_random_disjoint_k2_seed7.json").read_text())
    assert not set(disjoint["config"]["heads"]) & {"l0_h3", "l2_h1", "l1_h0"}

    # The recorded prediction is what the masked model generates.
    example = next(get_task("passkey").examples(passkey_dir, n=1))
    with mask_heads(tiny_adapter, ["l0_h3", "l2_h1"]):
        generated = tiny_adapter.generate(example_inputs(tiny_adapter, example), 4)
    assert top["predictions"][0]["prediction"] == tiny_adapter.decode(generated).strip()

    # A rerun resumes: no new samples, no duplicated CSV rows; a larger --n only runs the new samples.
    log = run_dir / "passkey_image_top_k2.samples.jsonl"
    assert masking_main([*common, "--do_masking"]) == 0
    assert len(log.read_text().splitlines()) == 2 and len(read_csv(out / "masking.csv")) == 8
    assert masking_main([*common, "--do_masking", "--n", "3"]) == 0
    assert len(log.read_text().splitlines()) == 3


def test_masking_text_task_on_nq(tiny_model_dir, nq_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # The default head list: scores/heads/{model}_te_documented.json for --task text.
    heads_dir = tmp_path / "scores" / "heads"
    heads_dir.mkdir(parents=True)
    (heads_dir / f"{tiny_model_dir.name}_te_documented.json").write_text(json.dumps(STEP3))
    argv = ["--datasets", "nq", "--task", "text", "--model_id", str(tiny_model_dir), "--data", f"nq={nq_file}",
            "--n", "2", "--max_new_tokens", "3", "--do_masking", "--num_of_masking_head", "1"]
    assert masking_main(argv) == 0
    rows = read_csv(tmp_path / "results" / "masking.csv")
    assert [(r["dataset"], r["task"], r["head_set"], r["metric"]) for r in rows] == [
        ("nq", "text", "top", "em"), ("nq", "text", "top", "f1")]


def test_masking_errors(tiny_model_dir, passkey_dir, heads_file, tmp_path, capsys):
    base = ["--datasets", "passkey", "--model_id", str(tiny_model_dir), "--data", str(passkey_dir), "--n", "1",
            "--max_new_tokens", "2", "--out", str(tmp_path / "r"), "--do_masking"]
    assert masking_main([*base, "--heads", str(tmp_path / "missing.json")]) == 2
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"heads": [{"head": "l7_h0", "score": 1.0}]}))
    assert masking_main([*base, "--heads", str(big)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert masking_main([*base, "--no_intersection", "--heads", str(heads_file)]) == 2
    # Resuming a run with a different head list is refused rather than mixing samples.
    assert masking_main([*base, "--heads", str(heads_file), "--num_of_masking_head", "1"]) == 0
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"heads": [{"head": "l1_h1", "score": 1.0}]}))
    capsys.readouterr()
    assert masking_main([*base, "--heads", str(other), "--num_of_masking_head", "1"]) == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if "error" in x.lower()]
    assert line.startswith("error: ") and "heads=['l0_h3'] (now ['l1_h1'])" in line and "--tag" in line


# ---------------------------------------------------------------- sink end to end


def test_sink_baseline_and_redistribution(tiny_adapter, tiny_model_dir, passkey_dir, heads_file, tmp_path):
    out = tmp_path / "results"
    common = ["--datasets", "passkey", "--model_id", str(tiny_model_dir), "--data", str(passkey_dir), "--n", "2",
              "--max_new_tokens", "4", "--out", str(out), "--heads", str(heads_file)]
    assert sink_main(common) == 0
    assert sink_main([*common, "--do_masking", "--unmasking", "--beta", "0.3", "--num_of_masking_head", "2"]) == 0
    rows = read_csv(out / "sink.csv")
    assert list(rows[0]) == [*CSV_COLUMNS, *ADDED_COLUMNS, "beta"]
    expected = [("none", "0", "")] * 2 + [("sink_top", "2", "0.3")] * 2
    assert [(r["head_set"], r["k"], r["beta"]) for r in rows] == expected
    summary = json.loads((out / "sink" / tiny_adapter.name / "passkey_image_sink_top_k2_beta0.3.json").read_text())
    assert summary["config"]["heads"] == ["l0_h3", "l2_h1"] and summary["config"]["beta"] == 0.3
    example = next(get_task("passkey").examples(passkey_dir, n=1))
    with redistribute_sink_heads(tiny_adapter, ["l0_h3", "l2_h1"], 0.3):
        generated = tiny_adapter.generate(example_inputs(tiny_adapter, example), 4)
    assert summary["predictions"][0]["prediction"] == tiny_adapter.decode(generated).strip()
    assert sink_main([*common, "--do_masking", "--unmasking", "--beta", "1.5"]) == 2


# ---------------------------------------------------------------- case study


def test_char_maps_by_hand():
    from ocr_heads.data.samples import Sample
    from ocr_heads.pipeline.case_study import char_maps

    def sample(sample_id, char):
        return Sample(sample_id, "q", char, char, [], {})

    chars = {"a": [sample("a0", "a"), sample("a1", "a")], "7": [sample("s0", "7")]}
    records = [{"id": "a0", "values": [[1.0, 0.0], [0.5, 0.0]]}, {"id": "a1", "values": [[0.0, 0.25]]},
               {"id": "s0", "values": []}]
    maps, events = char_maps(records, chars, ["l0_h0", "l0_h1"])
    assert maps == {"a": {"l0_h0": 0.5, "l0_h1": round(0.25 / 3, 6)}, "7": {"l0_h0": 0.0, "l0_h1": 0.0}}
    assert events == {"a": 3, "7": 0}


def test_maps_from_events_by_hand_and_samples_without_events():
    """A sample that never wrote the answer has no events, and step2 logs no event_chars for it: it adds nothing."""
    from ocr_heads.pipeline.case_study import maps_from_events

    records = [{"id": "a", "values": [[1.0, 0.0], [0.5, 0.5]], "event_chars": ["4", "42"]},
               {"id": "b", "values": []}]
    maps, events, samples = maps_from_events(records, ["l0_h0", "l0_h1"])
    assert maps == {"2": {"l0_h0": 0.5, "l0_h1": 0.5}, "4": {"l0_h0": 0.75, "l0_h1": 0.25}}
    assert events == {"2": 1, "4": 2} and samples == {"2": 1, "4": 1}
    with pytest.raises(ValueError, match="no event_chars"):
        maps_from_events([{"id": "c", "values": [[1.0, 0.0]]}], ["l0_h0", "l0_h1"])


@pytest.fixture(scope="module")
def single_char_dir(tmp_path_factory):
    from ocr_heads.data import haystack
    from ocr_heads.data.samples import generate_samples

    out = tmp_path_factory.mktemp("single_char")
    for char in "0a7":  # what step1_passkey.py --single-char writes, for three of the 36 characters
        generate_samples(out, f"char_{char}", 2, [64], 42, haystack.embedded_corpus(),
                         lambda _rng, c=char: haystack.single_char_needle(c))
    return out


def test_exp_case_end_to_end(tiny_adapter, tiny_model_dir, single_char_dir, tmp_path):
    pytest.importorskip("ocr_heads.scores.files", reason="step2 needs ocr_heads.scores.files (the selection branch)")
    from ocr_heads.pipeline.case_study import main as case_main

    out = tmp_path / "results"
    argv = ["--model_id", str(tiny_model_dir), "--data", str(single_char_dir), "--n", "1", "--max_new_tokens", "4",
            "--out", str(out)]
    assert case_main(argv) == 0
    result = json.loads((out / "case" / f"{tiny_adapter.name}_case.json").read_text())
    assert set(result) == {"model", "chars"} and result["model"] == tiny_adapter.name
    assert list(result["chars"]) == ["0", "7", "a"]  # 0-9a-z order
    assert all(len(scores) == 12 and all(0.0 <= v <= 1.0 for v in scores.values())
               for scores in result["chars"].values())
    meta = json.loads((out / "case" / f"{tiny_adapter.name}_case.meta.json").read_text())
    assert meta["samples_per_char"] == {"0": 1, "7": 1, "a": 1} and "random weights" in meta["warning"]
    log = out / "case" / f"{tiny_adapter.name}_case.samples.jsonl"
    assert len(log.read_text().splitlines()) == 3
    assert case_main(argv) == 0  # resumes: nothing new to score
    assert len(log.read_text().splitlines()) == 3
    with pytest.raises(SystemExit) as exit_info:
        case_main([*argv[:-2], "--out", str(tmp_path / "x"), "--n", "0"])
    assert exit_info.value.code == 2
