"""One home per file layout (ocr_heads.core.paths): the paths as the README documents them, written out by hand, and the
demo's runs filed where the command it logs for them files them."""

from __future__ import annotations

import json
import logging
import shlex
from pathlib import Path

import pytest

from ocr_heads.core.paths import SAMPLE_LOG, SIDECAR, case_file, companion, experiment_csv, experiment_dir
from ocr_heads.scores.files import heads_file, named_heads_file, score_file

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "models" / "toy-qwen2-vl"


def test_layout_by_hand():
    m = "toy-qwen2-vl"
    assert score_file("s", m, "ocr") == Path("s/image/toy-qwen2-vl_fg.json")
    assert score_file("s", m, "retrieval", SIDECAR) == Path("s/text/toy-qwen2-vl_te.meta.json")
    assert score_file("s", m, "prefill", SAMPLE_LOG) == Path("s/image/toy-qwen2-vl_prefill.samples.jsonl")
    assert heads_file("s", m, "fg", "documented") == Path("s/heads/toy-qwen2-vl_fg_documented.json")
    assert experiment_dir("r", "sink", m) == Path("r/sink/toy-qwen2-vl")
    assert experiment_csv("r", "masking") == Path("r/masking.csv")
    assert case_file("r", m) == Path("r/case/toy-qwen2-vl_case.json")
    assert case_file("r", m, SAMPLE_LOG) == Path("r/case/toy-qwen2-vl_case.samples.jsonl")
    # The demo's head lists (README: results/demo/ocr_heads.json, retrieval_heads.json, prefill_heads.json).
    assert [named_heads_file("d", s).name for s in ("ocr", "retrieval", "prefill")] == [
        "ocr_heads.json", "retrieval_heads.json", "prefill_heads.json"]


def test_companion():
    log = Path("s/image/M_fg.samples.jsonl")
    assert companion(log, SIDECAR) == Path("s/image/M_fg.meta.json")
    assert companion(Path("s/image/M_fg.meta.json"), ".json") == Path("s/image/M_fg.json")
    assert companion(Path("s/image/M_fg.json"), SAMPLE_LOG) == log
    with pytest.raises(ValueError, match="not a run's file"):
        companion(Path("s/image/M_fg.csv"), SIDECAR)


@pytest.fixture(scope="module")
def toy_eval(tmp_path_factory) -> Path:
    from ocr_heads.toy.data import write_samples

    out = tmp_path_factory.mktemp("toy_eval")
    write_samples(out, 2, seed=2000, split="heldout")
    return out


def test_demo_runs_are_filed_as_the_command_it_logs(toy_eval, tmp_path, caplog):
    """The demo runs masking/sink in-process and logs the equivalent exp_*.py command; that command, run, writes
    the same files with the same predictions."""
    from ocr_heads.demo import MAX_NEW_TOKENS, Masking, sink_rows
    from ocr_heads.models import load_adapter
    from ocr_heads.pipeline.experiment import run_main
    from ocr_heads.toy.data import TOY_PROTOCOL

    heads = tmp_path / "ocr_heads.json"
    heads.write_text(json.dumps({"heads": [{"head": "l1_h4", "score": 0.4}, {"head": "l1_h5", "score": 0.3}]}))
    adapter = load_adapter(str(TOY), protocol=TOY_PROTOCOL)
    demo = tmp_path / "demo"
    with caplog.at_level(logging.INFO, logger="demo"):
        sink = sink_rows(Masking(adapter, str(TOY), toy_eval, 2, demo), heads)
    assert sink["beta"] == 0.4
    commands = [r.getMessage().removeprefix("= ").split("  [heads:")[0] for r in caplog.records
                if r.name == "demo" and r.getMessage().startswith("= ")]  # the commands, not the progress lines
    assert commands == [
        "exp_sink.py --datasets passkey --task image",
        "exp_sink.py --datasets passkey --task image --num_of_masking_head 2 --seed 0 --do_masking --unmasking "
        "--beta=0.4"]
    cli = tmp_path / "cli"
    for command in commands:
        script, *argv = shlex.split(command)
        experiment = script.removeprefix("exp_").removesuffix(".py")
        assert run_main(experiment, [*argv, "--model_id", str(TOY), "--protocol", TOY_PROTOCOL, "--data",
                                     str(toy_eval), "--n", "2", "--max_new_tokens", str(MAX_NEW_TOKENS), "--heads",
                                     str(heads), "--out", str(cli)]) == 0
    names = sorted(p.name for p in experiment_dir(demo, "sink", "toy-qwen2-vl").iterdir())
    assert names == sorted(p.name for p in experiment_dir(cli, "sink", "toy-qwen2-vl").iterdir())
    assert "passkey_image_sink_top_k2_beta0.4.json" in names
    for name in ("passkey.json", "passkey_image_sink_top_k2_beta0.4.json"):
        ours, theirs = (json.loads((experiment_dir(root, "sink", "toy-qwen2-vl") / name).read_text())
                        for root in (demo, cli))
        assert ours["predictions"] == theirs["predictions"] and ours["metrics"] == theirs["metrics"]
        assert ours["config"]["heads"] == theirs["config"]["heads"]
        assert ours["config"]["protocol"] == theirs["config"]["protocol"] == TOY_PROTOCOL
