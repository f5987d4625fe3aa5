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
                         [("image", "fg", "produce"), ("text", "te", "produce"), ("image", "fg", "authors")])
def test_existing_scores_are_byte_identical_to_before_the_registry(toy_data, tmp_path, kind, tag, alignment):
    assert step2(kind, toy_data, tmp_path, "--alignment", alignment) == 0
    for name in (f"toy-qwen2-vl_{tag}.json", f"toy-qwen2-vl_{tag}_mean.json"):
        golden = GOLDEN / alignment / kind / name
        assert (tmp_path / kind / name).read_bytes() == golden.read_bytes(), name
    meta = json.loads((tmp_path / kind / f"toy-qwen2-vl_{tag}.meta.json").read_text())
    assert meta["kind"] == {"fg": "ocr", "te": "retrieval"}[tag] and "mass_threshold" not in meta


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


@pytest.mark.parametrize("argv", [["--score"], ["--score", "nope"]])
def test_score_flag_lists_the_registered_scores(tmp_path, capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main("image", ["--model_id", "m", "--data", str(tmp_path), *argv])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("error: --score takes a registered score")
    assert ("'nope'" in lines[0]) == ("nope" in argv)
    assert [line.split()[0] for line in lines[1:]] == list(all_scores())  # one line per score


@pytest.mark.parametrize(("kind", "extra", "message"), [
    ("text", ["--score", "prefill"], "score prefill reads the image form of a sample: run it with "
     "step2_ocr_retrieval_head.py"),
    ("image", ["--score", "retrieval"], "score retrieval reads the text form of a sample: run it with "
     "step2_text_retrieval_head.py"),
    ("image", ["--score", "prefill", "--alignment", "authors"], "score prefill implements --alignment produce, "
     "not 'authors'"),
])
def test_score_that_does_not_fit_the_run_is_refused(tmp_path, capsys, kind, extra, message):
    assert main(kind, ["--model_id", "m", "--data", str(tmp_path), "--out", str(tmp_path / "o"), *extra]) == 2
    assert capsys.readouterr().err.strip() == f"error: {message}"
    assert not (tmp_path / "o").exists()
