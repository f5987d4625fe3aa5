"""The ``slide`` task (SlideVQA dev) on a fixture in the release's layout (tests/fixtures/slidevqa)."""

import json
import logging
import shutil
from pathlib import Path

import pytest

from ocr_heads.pipeline.experiment import build_parser, masking_main
from ocr_heads.tasks import get_task

FIXTURE = Path(__file__).parent / "fixtures" / "slidevqa"


def test_slide_is_a_dataset_choice():
    assert "slide" in build_parser("masking").format_help()
    assert build_parser("masking").parse_args(["--datasets", "slide"]).datasets == ["slide"]


def test_examples_from_the_release_layout(caplog):
    task = get_task("slide")
    with caplog.at_level(logging.WARNING):
        examples = list(task.examples(str(FIXTURE), n=None))
    assert "skipped 1 question(s) whose slide images are missing" in caplog.text  # 103: its deck is absent
    # 102 is passed over: its evidence slide (9) is beyond the 8 the model sees
    assert [e.id for e in examples] == ["101", "104"]
    first, numeric = examples
    assert first.num_pages == 8 and first.pages[0].size == (160, 120)  # the first 8 of the deck's 10 slides
    assert first.golds == ["42 GW"] and first.meta["evidence_pages"] == [1]  # 0-based
    assert numeric.golds == ["18"] and numeric.meta["evidence_pages"] == [2, 4]
    assert first.prompt == "How much solar capacity was installed?\nAnswer the question using a single word or phrase."
    assert task.score("42 gw", first) == {"em": 1.0, "f1": 1.0}
    # the annotations file itself is a source too
    assert [e.id for e in task.examples(str(FIXTURE / "annotations" / "qa" / "dev.jsonl"), n=1)] == ["101"]


def test_no_question_left_is_one_error(tiny_model_dir, tmp_path, capsys):
    broken = tmp_path / "SlideVQA"
    shutil.copytree(FIXTURE / "annotations", broken / "annotations")  # no images at all
    code = masking_main(["--datasets", "slide", "--data", str(broken), "--model_id", str(tiny_model_dir),
                         "--n", "1", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "error: no SlideVQA question" in err and "(4 skipped)" in err
    with pytest.raises(FileNotFoundError, match="no SlideVQA annotations"):
        get_task("slide").rows(str(tmp_path / "nowhere"))


def test_masking_runs_on_slides(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    assert masking_main(["--datasets", "slide", "--data", str(FIXTURE), "--model_id", str(tiny_model_dir),
                         "--n", "2", "--max_new_tokens", "3", "--out", str(out)]) == 0
    summary = json.loads((out / "masking" / tiny_model_dir.name / "slide.json").read_text())
    assert summary["n"] == 2 and set(summary["metrics"]) == {"em", "f1"}
    assert [p["id"] for p in summary["predictions"]] == ["101", "104"]


@pytest.mark.parametrize("family", ["qwen2_vl", "internvl", "smolvlm", "gemma3", "llava_onevision"])
def test_each_family_builds_its_multi_page_prompt(family, family_dir):
    from ocr_heads.experiments.data import example_inputs
    from ocr_heads.experiments.reading import evidence_positions
    from ocr_heads.models import load_adapter

    adapter = load_adapter(str(family_dir(family)))
    example = next(iter(get_task("slide").examples(str(FIXTURE), n=1)))
    inputs = example_inputs(adapter, example)
    assert sorted({tokens.page for tokens in inputs.image_tokens}) == list(range(8))  # one image per slide
    evidence = evidence_positions(example, inputs)  # slide 2 (0-based 1): every image token of that page
    assert evidence.kind == "pages"
    assert evidence.positions == sorted(p for t in inputs.image_tokens if t.page == 1 for p in t.positions)
    assert evidence.positions


def test_a_copy_with_local_image_paths_and_no_qa_id(tmp_path):
    slides = sorted((FIXTURE / "images" / "dev").glob("*/*.jpg"), key=lambda p: int(p.stem.split("-")[-2]))
    record = {"deck_name": "local-deck", "image_urls": [str(p) for p in slides[:3]], "question": "Capacity?",
              "answer": "42 GW", "evidence_pages": [2]}
    (tmp_path / "annotations" / "qa").mkdir(parents=True)
    (tmp_path / "annotations" / "qa" / "dev.jsonl").write_text(json.dumps(record) + "\n")
    (example,) = get_task("slide").examples(str(tmp_path), n=None)
    assert example.id == "slide_0" and example.num_pages == 3 and example.meta["evidence_pages"] == [1]
