"""No silent zeros (issue 21, item 3): a checkpoint's declared protocol is used and named, a step2 run whose
scores say nothing ends with a warning naming the cause, and doctor fails a model that misreads its own page."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from ocr_heads import doctor
from ocr_heads.core.kinds import Modality
from ocr_heads.models.protocol import DECLARED_KEY, resolve_protocol
from ocr_heads.pipeline.step2 import likely_causes, main, silent_zero_warning
from ocr_heads.scores.files import ScoreFile

TOY_MODEL = Path(__file__).resolve().parents[1] / "models" / "toy-qwen2-vl"
needs_toy = pytest.mark.skipif(not (TOY_MODEL / "config.json").is_file(), reason="toy checkpoint not present")


def test_protocol_given_then_declared_then_default():
    declared = SimpleNamespace(**{DECLARED_KEY: "native"})
    assert resolve_protocol("paper", declared) == ("paper", "given")
    protocol, source = resolve_protocol(None, declared)
    assert protocol == "native" and "declared by the checkpoint" in source
    assert resolve_protocol(None, SimpleNamespace())[0] == "paper"
    with pytest.raises(ValueError, match=DECLARED_KEY):
        resolve_protocol(None, SimpleNamespace(**{DECLARED_KEY: "huge"}))


@needs_toy
def test_toy_declares_native():
    assert json.loads((TOY_MODEL / "config.json").read_text())[DECLARED_KEY] == "native"


def _step2(data: Path, out: Path, *extra: str) -> int:
    return main("image", ["--model_id", str(TOY_MODEL), "--data", str(data), "--out", str(out),
                          "--max_new_tokens", "8", *extra])


@needs_toy
def test_toy_without_protocol_scores_as_native_and_says_so(tmp_path, caplog):
    from ocr_heads.toy.data import write_samples

    data = tmp_path / "toy"
    write_samples(data, 2, seed=11)
    with caplog.at_level(logging.INFO):
        assert _step2(data, tmp_path / "default") == 0
    assert "page protocol native (declared by the checkpoint" in caplog.text
    assert _step2(data, tmp_path / "native", "--protocol", "native") == 0
    for name in ("toy-qwen2-vl_fg.json", "toy-qwen2-vl_fg_mean.json"):
        default, native = (tmp_path / run / "image" / name for run in ("default", "native"))
        assert default.read_bytes() == native.read_bytes(), name


@needs_toy
def test_a_run_that_reads_no_answer_names_the_protocol(tmp_path, capsys):
    """Under the paper's budget the toy's pages are upscaled and it misreads them: the first sample of seed 11
    shares no digit with its key, so no answer is read anywhere (exit 3), and the error names the flag to try."""
    from ocr_heads.toy.data import write_samples

    data = tmp_path / "toy"
    write_samples(data, 1, seed=11)
    assert _step2(data, tmp_path / "paper", "--protocol", "paper") == 3
    err = capsys.readouterr().err
    assert "the page protocol paper (given)" in err and "try --protocol native" in err


def _scores(means: list[float], mean_recall: float) -> ScoreFile:
    return ScoreFile(None, {f"l0_h{i}": [m] for i, m in enumerate(means)}, {f"l0_h{i}": m for i, m in enumerate(means)},
                     "ocr", "m", 1, len(means), {"n_samples": 4, "mean_recall": mean_recall})


def test_silent_zero_warning_and_its_causes():
    assert silent_zero_warning(_scores([0.0, 0.3], 0.5)) is None
    assert "recall 0 in all 4 samples" in silent_zero_warning(_scores([0.0, 0.0], 0.0))
    assert "every head scores 0 over 4 samples" in silent_zero_warning(_scores([0.0, 0.0], 0.4))
    paper = SimpleNamespace(config=SimpleNamespace(), protocol="paper", protocol_source="the default")
    assert "try --protocol native" in likely_causes(Modality.IMAGE, paper, 8)
    native = SimpleNamespace(config=SimpleNamespace(ocr_heads_random_weights=True), protocol="native",
                             protocol_source="given")
    causes = likely_causes(Modality.IMAGE, native, 8)
    assert causes.startswith("the model has random weights") and "try --protocol paper" in causes
    assert "protocol" not in likely_causes(Modality.TEXT, paper, 8)  # text runs show no pages


def test_step2_warns_when_no_answer_is_read(tiny_model_dir, passkey_dir, tmp_path, caplog):
    """The random tiny model never writes the key; the text score under the authors' rule still has events
    (answer ids inside the prompt), so the run finishes: it must end with the warning, not silently."""
    with caplog.at_level(logging.WARNING):
        code = main("text", ["--model_id", str(tiny_model_dir), "--data", str(passkey_dir), "--out", str(tmp_path),
                             "--max_new_tokens", "4", "--alignment", "authors"])
    assert code == 0
    assert "no sample's answer was read: recall 0 in all 6 samples" in caplog.text
    assert "the model has random weights" in caplog.text


@needs_toy
def test_doctor_fails_a_model_that_misreads_its_own_protocols_page(capsys):
    """The toy cannot read a generic step1 page (it was trained on tile-exact pages): a FAIL row, exit 1, and
    never "all checks passed"."""
    assert doctor.main(["--model_id", str(TOY_MODEL)]) == 1
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("passkey"))
    assert "FAIL" in row and "protocol native" in row
    assert "all checks passed" not in out and "doctor: 1 failed: passkey" in out


def test_doctor_keeps_a_random_models_miss_a_warning():
    sample = SimpleNamespace(answer="48213")
    adapter = SimpleNamespace(config=SimpleNamespace(ocr_heads_random_weights=True), protocol="paper",
                              protocol_source="the default")
    assert doctor.check_answer(adapter, sample, "xyz").status == doctor.WARN
    adapter.config = SimpleNamespace()
    assert doctor.check_answer(adapter, sample, "xyz").status == doctor.FAIL
    assert doctor.check_answer(adapter, sample, "key 48213").status == doctor.OK
