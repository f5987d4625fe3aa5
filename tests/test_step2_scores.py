"""step2 through the score registry: the existing scores' files are byte-identical to before the registry,
``--score prefill`` writes a score file step3 ranks, and ``--score`` lists the registered scores."""

import json
from pathlib import Path

import pytest

from ocr_heads.pipeline.step2 import main
from ocr_heads.scores import all_scores
from ocr_heads.toy.data import TOY_PROTOCOL

ROOT = Path(__file__).resolve().parents[1]
TOY_MODEL = ROOT / "models" / "toy-qwen2-vl"
GOLDEN = ROOT / "tests" / "data" / "golden_scores"
needs_toy = pytest.mark.skipif(not (TOY_MODEL / "config.json").is_file(), reason="toy checkpoint not present")


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
    """The three toy samples the golden files were made from (tests/data/golden_scores/README.md)."""
    from ocr_heads.toy.data import write_samples

    data = tmp_path_factory.mktemp("toy") / "data"
    write_samples(data, 3, seed=11)
    return data


def step2(kind, data, out, *extra):
    return main(kind, ["--model_id", str(TOY_MODEL), "--protocol", TOY_PROTOCOL, "--data", str(data), "--out",
                       str(out), "--max_new_tokens", "8", *extra])


@needs_toy
@pytest.mark.parametrize(("kind", "tag", "alignment"),
                         [("image", "fg", "produce"), ("text", "te", "produce"), ("image", "fg", "authors"),
                          ("image", "prefill", "produce")])
def test_existing_scores_are_byte_identical_to_before_the_registry(toy_data, tmp_path, kind, tag, alignment):
    """ocr, retrieval and prefill write the bytes they wrote before (the prefill golden files: commit bcff5eb,
    before the design-space scores and multi-score runs)."""
    score = {"fg": [], "te": [], "prefill": ["--score", "prefill"]}[tag]
    assert step2(kind, toy_data, tmp_path, "--alignment", alignment, *score) == 0
    for name in (f"toy-qwen2-vl_{tag}.json", f"toy-qwen2-vl_{tag}_mean.json"):
        golden = GOLDEN / alignment / kind / name
        assert (tmp_path / kind / name).read_bytes() == golden.read_bytes(), name
    meta = json.loads((tmp_path / kind / f"toy-qwen2-vl_{tag}.meta.json").read_text())
    assert meta["kind"] == {"fg": "ocr", "te": "retrieval", "prefill": "prefill"}[tag]
    assert ("mass_threshold" in meta) == (tag == "prefill")


def _outputs(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.suffix != ".lock"}


@needs_toy
def test_one_pass_of_every_score_writes_what_each_score_alone_writes(toy_data, tmp_path, caplog):
    """--score all generates each sample once and writes, per score, the very bytes a run of that score alone
    writes: score file, _mean, sidecar (same commit, so the same git_sha), run identity and per-sample log."""
    image = [score.name for score in all_scores().values() if score.modality == "image"]
    assert len(image) >= 6
    assert step2("image", toy_data, tmp_path / "all", "--score", "all") == 0
    for name in image:
        assert step2("image", toy_data, tmp_path / "alone", "--score", name) == 0
    together, alone = _outputs(tmp_path / "all" / "image"), _outputs(tmp_path / "alone" / "image")
    assert len(together) == 5 * len(image)  # .json, _mean.json, .meta.json, .run.json, .samples.jsonl per score
    assert together.keys() == alone.keys()
    for file_name, content in together.items():
        assert content == alone[file_name], file_name
    for score in image:
        tag = all_scores()[score].tag
        meta = json.loads((tmp_path / "all" / "image" / f"toy-qwen2-vl_{tag}.meta.json").read_text())
        assert meta["kind"] == score and meta["n_samples"] == 3
    # A rerun with another set: ocr's log is complete, so nothing is generated for it; a new score's samples are.
    caplog.clear()
    with caplog.at_level("INFO"):
        assert step2("image", toy_data, tmp_path / "alone", "--score", "ocr", "ocr_mass") == 0
    assert "toy-qwen2-vl_fg.samples.jsonl: 3 of 3 samples already done" in caplog.text
    assert _outputs(tmp_path / "alone" / "image") == alone  # nothing rewritten differently, no log line added


@needs_toy
def test_a_new_score_joins_a_finished_run_for_its_own_samples_only(toy_data, tmp_path):
    """A rerun with one more score generates the samples again for that score only: the first score's log keeps
    one line per sample, the new score's files equal a run of it alone."""
    assert step2("image", toy_data, tmp_path / "a", "--score", "ocr") == 0
    log = tmp_path / "a" / "image" / "toy-qwen2-vl_fg.samples.jsonl"
    before = log.read_bytes()
    assert step2("image", toy_data, tmp_path / "a", "--score", "ocr", "question_mass") == 0
    assert log.read_bytes() == before
    assert step2("image", toy_data, tmp_path / "b", "--score", "question_mass") == 0
    for name in ("toy-qwen2-vl_qmass.json", "toy-qwen2-vl_qmass.samples.jsonl", "toy-qwen2-vl_qmass.meta.json"):
        assert (tmp_path / "a" / "image" / name).read_bytes() == (tmp_path / "b" / "image" / name).read_bytes()


@needs_toy
def test_a_rerun_with_other_settings_is_refused_for_every_score_before_anything_runs(toy_data, tmp_path, capsys):
    assert step2("image", toy_data, tmp_path, "--score", "ocr_mass") == 0
    before = _outputs(tmp_path / "image")
    assert step2("image", toy_data, tmp_path, "--score", "ocr", "ocr_mass", "--max_new_tokens", "6") == 2
    assert "was made with other settings" in capsys.readouterr().err
    assert not (tmp_path / "image" / "toy-qwen2-vl_fg.samples.jsonl").exists()
    assert _outputs(tmp_path / "image").keys() - before.keys() <= {"toy-qwen2-vl_fg.run.json"}


@needs_toy
def test_prefill_score_file_ranked_by_step3(toy_data, tmp_path, capsys):
    import step3_extracted_heads

    assert step2("image", toy_data, tmp_path / "scores", "--score", "prefill") == 0
    folder = tmp_path / "scores" / "image"
    per_head = json.loads((folder / "toy-qwen2-vl_prefill.json").read_text())
    means = json.loads((folder / "toy-qwen2-vl_prefill_mean.json").read_text())
    meta = json.loads((folder / "toy-qwen2-vl_prefill.meta.json").read_text())
    assert len(per_head) == 6 * 8 and all(len(values) == 15 for values in per_head.values())  # 3 samples x 5 digits
    assert meta["kind"] == "prefill" and meta["mass_threshold"] == 0.5 and meta["n_events"] == 15
    assert means == {head: sum(values) / len(values) for head, values in per_head.items()}
    out = tmp_path / "prefill_heads.json"
    assert step3_extracted_heads.main(["--scores", str(folder / "toy-qwen2-vl_prefill.json"), "--rule",
                                       "documented", "--out", str(out)]) == 0
    heads = json.loads(out.read_text())
    assert heads["kind"] == "prefill" and heads["rule"] == "documented"
    ranked = [entry["head"] for entry in heads["heads"]]
    assert [entry["score"] for entry in heads["heads"]] == sorted((e["score"] for e in heads["heads"]), reverse=True)
    assert all(head.startswith("l0_") for head in ranked[:5]), ranked  # the layer-0 heads that read at prefill
    # The authors' style, by file tag and model: the same list at scores/heads/NAME_prefill_documented.json.
    assert step3_extracted_heads.main(["--te_fg_cg", "prefill", "--model_id", str(TOY_MODEL), "--scores_dir",
                                       str(tmp_path / "scores")]) == 0
    by_tag = json.loads((tmp_path / "scores" / "heads" / "toy-qwen2-vl_prefill_documented.json").read_text())
    assert by_tag["heads"] == heads["heads"]


def test_score_all_is_every_score_of_the_scripts_modality_that_implements_the_alignment():
    from ocr_heads.pipeline.step2 import Step2Config

    image = [name for name, score in all_scores().items() if score.modality == "image"]
    assert Step2Config("image", score=["all"]).score == tuple(image)
    assert Step2Config("image", score="all", alignment="authors").score == ("ocr",)  # the others: produce only
    assert Step2Config("text", score=["all"]).score == ("retrieval",)
    assert Step2Config("image", score=["ocr_mass", "all", "ocr"]).score[:2] == ("ocr_mass", image[0])  # given order
    assert Step2Config("image").score == ("ocr",) and Step2Config("image").head_score.name == "ocr"
    with pytest.raises(ValueError, match="has 2 scores"):
        _ = Step2Config("image", score=["ocr", "prefill"]).head_score


@pytest.mark.parametrize("argv", [["--score"], ["--score", "nope"], ["--score", "ocr", "nope"]])
def test_score_flag_lists_the_registered_scores(tmp_path, capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main("image", ["--model_id", "m", "--data", str(tmp_path), *argv])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("error: --score takes a registered score (or several, or all)")
    assert ("'nope'" in lines[0]) == ("nope" in argv)
    assert [line.split()[0] for line in lines[1:]] == list(all_scores())  # one line per score


@pytest.mark.parametrize(("kind", "extra", "message"), [
    ("text", ["--score", "prefill"], "score prefill reads the image form of a sample: run it with "
     "step2_ocr_retrieval_head.py"),
    ("image", ["--score", "retrieval"], "score retrieval reads the text form of a sample: run it with "
     "step2_text_retrieval_head.py"),
    ("image", ["--score", "prefill", "--alignment", "authors"], "score prefill implements --alignment produce, "
     "not 'authors'"),
    ("image", ["--score", "ocr", "retrieval"], "scores ocr (image), retrieval (text) read different forms of a "
     "sample: one run scores one modality (image: step2_ocr_retrieval_head.py, text: step2_text_retrieval_head.py)"),
])
def test_score_that_does_not_fit_the_run_is_refused(tmp_path, capsys, kind, extra, message):
    assert main(kind, ["--model_id", "m", "--data", str(tmp_path), "--out", str(tmp_path / "o"), *extra]) == 2
    assert capsys.readouterr().err.strip() == f"error: {message}"
    assert not (tmp_path / "o").exists()
