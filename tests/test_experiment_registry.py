"""The experiment registry: masking and sink declared once; file names, CSV columns and config keys derived from
the declarations stay the ones the result files have always had (written out by hand below)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ocr_heads.attention.edits import BETA_DEFAULT, BETA_RANGE
from ocr_heads.experiments.base import NONE
from ocr_heads.experiments.registry import all_experiments, get_experiment
from ocr_heads.experiments.run import RunConfig, csv_rows
from ocr_heads.pipeline.experiment import build_parser

ROOT = Path(__file__).resolve().parents[1]
# The config of every result file (summary "config"), key by key, in file order.
CONFIG_KEYS = ["experiment", "model_id", "dataset", "task", "head_set", "k", "seed", "heads", "heads_path", "beta",
               "source", "n", "data_seed", "max_new_tokens", "tag", "protocol", "model_fingerprint"]
# The model is pinned by its fingerprint (what was loaded), not model_id (where it was loaded from).
IDENTITY_KEYS = ["experiment", "model_fingerprint", "dataset", "head_set", "heads", "beta", "source", "data_seed",
                 "max_new_tokens", "protocol", "data_fingerprint"]
CSV = ["model", "protocol", "dataset", "task", "head_set", "k", "seed", "metric", "value", "n", "note", "prompt",
       "selection"]


def test_registry_holds_masking_and_sink_each_with_its_script():
    assert list(all_experiments()) == ["masking", "sink"]
    for experiment in all_experiments().values():
        assert (ROOT / experiment.script).is_file()
    with pytest.raises(ValueError, match="registered: masking, sink"):
        get_experiment("scaling")


@pytest.mark.parametrize("name", ["masking", "sink"])
def test_each_head_sets_flags_choose_it(name):
    """The flags an edit declares (logged by the demo as the equivalent command) are the ones that choose it."""
    experiment = get_experiment(name)
    parser = build_parser(experiment)
    assert experiment.head_set(parser.parse_args([])) == NONE
    for head_set, edit in experiment.edits.items():
        assert experiment.head_set(parser.parse_args(edit.flags.split())) == head_set


def test_sink_declares_beta_once_and_checks_its_range():
    (beta,) = get_experiment("sink").options
    # sink.py writes the edit's default and range out (no torch at import): they must agree with the edit's.
    assert (beta.name, beta.default, (beta.low, beta.high)) == ("beta", BETA_DEFAULT, BETA_RANGE)
    assert BETA_RANGE == (0.0, 1.0)
    assert build_parser("sink").parse_args([]).beta == BETA_DEFAULT == 0.4
    assert get_experiment("masking").options == ()
    assert not hasattr(build_parser("masking").parse_args([]), "beta")
    assert beta.check(0.0) == 0.0 and beta.check(1.0) == 1.0
    for bad, shown in ((1.5, "1.5"), (-0.1, "-0.1")):
        with pytest.raises(ValueError, match=rf"^--beta must be in \[0, 1\], got {shown}$"):
            beta.check(bad)


def test_sinks_top_head_set_is_the_masking_edit():
    """exp_sink's head set ``top`` is the masking experiment's own edit (the authors' --do_masking alone)."""
    sink, masking = get_experiment("sink"), get_experiment("masking")
    assert sink.edits["top"] is masking.edits["top"]
    assert sink.edits["sink_top"].selection == "top" and sink.edits["sink_top"].options == sink.options


def test_an_edit_names_a_selection_rule():
    from ocr_heads.experiments.base import Edit

    with pytest.raises(ValueError, match="by one of top, random, random_disjoint, not 'sink_top'"):
        Edit("sink_top", lambda adapter, heads, options: None, "--do_masking")


def test_file_stems():
    def stem(experiment, head_set, options=None, seed=7):
        return RunConfig(experiment, "m", "doc", "image", head_set, 2, seed, options=options or {}).stem

    assert stem("masking", NONE) == stem("sink", NONE) == "doc"
    assert stem("masking", "top") == stem("sink", "top") == "doc_image_top_k2"
    assert stem("masking", "random") == "doc_image_random_k2_seed7"
    assert stem("masking", "random_disjoint") == "doc_image_random_disjoint_k2_seed7"
    assert stem("sink", "sink_top", {"beta": 0.4}) == "doc_image_sink_top_k2_beta0.4"
    assert stem("sink", "sink_top", {"beta": 1.0}) == "doc_image_sink_top_k2_beta1"
    with pytest.raises(ValueError, match="has no head set 'random'"):
        stem("sink", "random")


def test_config_and_identity_keys_are_the_result_files_keys():
    for experiment, options in (("masking", {}), ("sink", {"beta": 0.3})):
        cfg = RunConfig(experiment, "m", "doc", "image", "top", 2, 1, ["l0_h0"], "h.json", options, "/data")
        record = cfg.record()
        assert list(record) == CONFIG_KEYS
        assert record["beta"] == options.get("beta")  # masking files carry "beta": null, as they always have
        assert json.loads(json.dumps(record)) == record
        assert list(cfg.identity()) == IDENTITY_KEYS


def test_csv_columns():
    metrics = {"em": 0.5}
    masking = RunConfig("masking", "m", "doc", "image", "top", 2, 1)
    assert list(csv_rows(masking, metrics, 4, "M")[0]) == [*CSV, "mask_mode"] == get_experiment("masking").csv_columns
    sink = RunConfig("sink", "m", "doc", "image", "sink_top", 2, 1, options={"beta": 0.3})
    (row,) = csv_rows(sink, metrics, 4, "M")
    assert list(row) == [*CSV, "beta"] == get_experiment("sink").csv_columns
    assert (row["head_set"], row["value"], row["beta"]) == ("sink_top", "0.500000", "0.3")
    assert csv_rows(RunConfig("sink", "m", "doc", "image", "top", 2, 1), metrics, 4, "M")[0]["beta"] == ""


def test_help_names_the_outputs():
    sink = build_parser("sink").format_help()
    assert "STEM = dataset[_task_headset_kK[_seedS]_betaB[_authors]][_cot]" in sink and "OUT/sink.csv" in sink
    assert f"{', '.join(CSV)}, beta" in " ".join(sink.split())
    masking = build_parser("masking").format_help()
    assert "STEM = dataset[_task_headset_kK[_seedS][_authors]][_cot]" in masking
    assert "head_set: none | top | random" in masking
