"""Family knobs: declared by the families, on every command, passed to the adapter, refused for other families."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from PIL import Image, ImageDraw

from ocr_heads import inspect
from ocr_heads.models import load_adapter, registered_families
from ocr_heads.models.gemma3 import Gemma3Adapter
from ocr_heads.models.internvl import InternVLAdapter
from ocr_heads.models.llava_onevision import LlavaOnevisionAdapter
from ocr_heads.models.options import family_knobs
from ocr_heads.models.qwen2_vl import Qwen2VLAdapter
from ocr_heads.models.smolvlm import SmolVLMAdapter
from ocr_heads.models.text_lm import TextLMAdapter
from ocr_heads.pipeline import case_study, step2
from ocr_heads.pipeline.experiment import build_parser, masking_main

PAGE = (635, 482)  # 635 / 482 = 1.32 >= 1.2: Gemma 3's pan-and-scan cuts it into 2 crops (3 x 256 tokens)
QWEN = ["qwen2_5_vl", "qwen2_vl", "qwen3_5", "qwen3_vl", "qwen3_vl_moe"]  # registry order: sorted by model type


@pytest.fixture(scope="module")
def gemma3_dir(family_dir):
    return family_dir("gemma3")


@pytest.fixture(scope="module")
def page_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("page") / "page.png"
    page = Image.new("RGB", PAGE, "white")
    ImageDraw.Draw(page).text((20, 20), "The pass key is 48213.", fill="black")
    page.save(path)
    return path


def tokens(capsys, argv: list[str]) -> int:
    assert inspect.main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])["image_tokens"]


def test_the_families_declare_the_knobs():
    knobs = {name: kinds for name, (_, kinds) in family_knobs().items()}
    assert knobs == {"min_pixels": QWEN, "max_pixels": QWEN, "max_patches": ["internvl", "internvl_chat"],
                     "pan_and_scan": ["gemma3"], "image_splitting": ["idefics3", "smolvlm"]}


def test_each_adapter_takes_the_knobs_its_family_declares():
    for kind, family in registered_families().items():
        loader = family.load()
        # internvl_chat and internlm2 convert, then load natively with these adapters
        converted = {"internvl_chat": InternVLAdapter, "internlm2": TextLMAdapter}
        adapter_class = loader if isinstance(loader, type) else converted[kind]
        assert adapter_class.KNOBS is family.knobs, kind


def test_a_family_registered_outside_the_declarations_gets_its_knobs_on_the_command_line(tmp_path):
    """``@register_family`` on a user's own adapter: filed with its KNOBS, its flag on every command."""
    model = tmp_path / "mine"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "my_vlm"}')
    code = textwrap.dedent(f"""
        from ocr_heads.models import family_loader, register_family, registered_families
        from ocr_heads.models.families import Knob
        from ocr_heads.pipeline import step2

        @register_family("my_vlm")
        class MyAdapter:
            KNOBS = (Knob("max_side", int, "longest page side"),)

        assert registered_families()["my_vlm"].knobs == MyAdapter.KNOBS
        assert "longest page side (my_vlm models only)" in step2.build_parser("image").format_help()
        assert family_loader({str(model)!r}) is MyAdapter
        """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("adapter_class, knobs, message", [
    (Gemma3Adapter, {"max_patches": 2}, "Gemma 3 models take pan_and_scan, not max_patches"),
    (Qwen2VLAdapter, {"pan_and_scan": True, "max_patches": 2}, "Qwen2-VL models take min_pixels, max_pixels, not "
     "max_patches, pan_and_scan"),
    (LlavaOnevisionAdapter, {"min_pixels": 3136}, "LLaVA-OneVision models take no page settings beyond the protocol, "
     "not min_pixels"),
    (Qwen2VLAdapter, {"max_pixels": "100352"}, "max_pixels must be an integer, got '100352'"),
    (Qwen2VLAdapter, {"min_pixels": True}, "min_pixels must be an integer, got True"),
    (InternVLAdapter, {"max_patches": 0}, "max_patches must be positive, got 0"),
    (SmolVLMAdapter, {"image_splitting": 1}, "image_splitting is a switch (True or False), got 1"),
])
def test_a_wrong_knob_is_one_clear_error_before_anything_loads(adapter_class, knobs, message, tmp_path):
    with pytest.raises(ValueError) as refused:
        adapter_class(str(tmp_path / "no-such-model"), **knobs)  # a path that does not exist: nothing was read
    assert str(refused.value) == message


@pytest.mark.parametrize("family, knobs, tokens_by_default, tokens_with_knob", [
    ("qwen2_vl", {"max_pixels": 100352}, 234, 108),  # 13 x 18 tokens (the paper's ~256), then 9 x 12 (<= 128)
    ("internvl", {"max_patches": 6}, 256, 7 * 256),  # one tile, then 2 x 3 tiles + the thumbnail
    ("gemma3", {"pan_and_scan": True}, 256, 3 * 256),  # the page, then the page + 2 crops
    ("smolvlm", {"image_splitting": True}, 64, 17 * 64),  # the global image, then 4 x 4 tiles + the global image
])
def test_each_familys_knob_reaches_its_image_processor(family, knobs, tokens_by_default, tokens_with_knob,
                                                        family_dir, tiny_model_dir):
    model = tiny_model_dir if family == "qwen2_vl" else family_dir(family)
    page = Image.new("RGB", PAGE, "white")
    for given, tokens in (({}, tokens_by_default), (knobs, tokens_with_knob)):
        adapter = load_adapter(str(model), weights=False, **given)
        assert adapter.knobs == {name: given.get(name) for name in adapter.knobs}
        assert adapter.image_inputs([page], "q?").tokens_per_page == [tokens] == [adapter.expected_tokens(PAGE)]


def test_every_command_has_every_knob():
    parsers = {"step2 image": step2.build_parser("image"), "step2 text": step2.build_parser("text"),
               "exp_masking": build_parser("masking"), "exp_sink": build_parser("sink"),
               "exp_case": case_study.build_parser(), "inspect": inspect.build_parser()}
    for name, parser in parsers.items():
        base = ["--model_id", "m", *(["--image", "p.png"] if name == "inspect" else [])]
        args = parser.parse_args([*base, "--min_pixels", "3136", "--max_pixels", "100352", "--max_patches", "2",
                                  "--pan_and_scan"])
        assert (args.min_pixels, args.max_pixels, args.max_patches, args.pan_and_scan) == (3136, 100352, 2, True)
        assert parser.parse_args([*base, "--no-pan-and-scan"]).pan_and_scan is False  # both spellings
        unset = parser.parse_args(base)
        assert (unset.min_pixels, unset.max_pixels, unset.max_patches, unset.pan_and_scan,
                unset.image_splitting) == (None,) * 5


def test_pan_and_scan_on_gemma3_changes_the_tokens_per_page(gemma3_dir, page_png, capsys):
    argv = ["--model_id", str(gemma3_dir), "--image", str(page_png)]
    assert tokens(capsys, argv) == 256
    assert tokens(capsys, [*argv, "--pan_and_scan"]) == 3 * 256
    assert tokens(capsys, [*argv, "--protocol", "native", "--pan_and_scan"]) == 3 * 256


def test_no_pan_and_scan_overrides_the_checkpoint(gemma3_dir, page_png, tmp_path, capsys):
    import shutil

    model = tmp_path / "gemma3-pan"
    shutil.copytree(gemma3_dir, model)
    config = model / "preprocessor_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "do_pan_and_scan": True}))
    argv = ["--model_id", str(model), "--image", str(page_png), "--protocol", "native"]
    assert tokens(capsys, argv) == 3 * 256  # native keeps the checkpoint's setting
    assert tokens(capsys, [*argv, "--no_pan_and_scan"]) == 256


def test_a_knob_of_another_family_is_an_error(tiny_model_dir, gemma3_dir, page_png, passkey_dir, tmp_path, capsys):
    assert inspect.main(["--model_id", str(tiny_model_dir), "--image", str(page_png), "--max_patches", "2"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == ("error: --max_patches is not a setting of qwen2_vl models (it is one of internvl, internvl_chat); "
                    "qwen2_vl models take --min_pixels, --max_pixels")
    assert inspect.main(["--model_id", str(gemma3_dir), "--image", str(page_png), "--min_pixels", "3136"]) == 2
    assert capsys.readouterr().err.startswith("error: --min_pixels is not a setting of gemma3 models")
    argv = ["--model_id", str(tiny_model_dir), "--datasets", "passkey", "--data", str(passkey_dir), "--n", "1",
            "--out", str(tmp_path / "r"), "--pan_and_scan"]
    assert masking_main(argv) == 2
    assert capsys.readouterr().err.startswith("error: --pan_and_scan is not a setting of qwen2_vl models (it is one "
                                              "of gemma3)")
    assert not (tmp_path / "r" / "masking.csv").exists()


def test_a_knob_must_be_positive(tiny_model_dir, page_png, capsys):
    assert inspect.main(["--model_id", str(tiny_model_dir), "--image", str(page_png), "--max_pixels", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --max_pixels must be positive, got 0"


def test_experiment_runs_record_the_knobs_and_refuse_other_ones(tiny_model_dir, passkey_dir, tmp_path, capsys):
    """Other page settings give other image tokens: resuming a run with another --min_pixels is refused."""
    out = tmp_path / "r"
    argv = ["--model_id", str(tiny_model_dir), "--datasets", "passkey", "--data", str(passkey_dir), "--n", "1",
            "--max_new_tokens", "2", "--out", str(out)]
    assert masking_main([*argv, "--min_pixels", "3136"]) == 0
    run_dir = out / "masking" / "tiny-qwen2-vl"
    summary = json.loads((run_dir / "passkey.json").read_text())
    assert summary["config"]["knobs"] == {"min_pixels": 3136} and summary["protocol"]["min_pixels"] == 3136
    assert json.loads((run_dir / "passkey.config.json").read_text())["knobs"] == {"min_pixels": 3136}
    capsys.readouterr()
    assert masking_main([*argv, "--min_pixels", "6272"]) == 2
    assert "knobs={'min_pixels': 3136} (now {'min_pixels': 6272})" in capsys.readouterr().err
    assert masking_main([*argv, "--out", str(tmp_path / "plain")]) == 0  # no knob: the files keep their layout
    plain = tmp_path / "plain" / "masking" / "tiny-qwen2-vl"
    assert "knobs" not in json.loads((plain / "passkey.json").read_text())["config"]
    assert "knobs" not in json.loads((plain / "passkey.config.json").read_text())


def test_image_splitting_on_smolvlm_adds_the_tiles(family_dir, page_png, capsys):
    model = family_dir("smolvlm")
    argv = ["--model_id", str(model), "--image", str(page_png)]
    # 635 x 482 -> longest edge 2048 (2048 x 1554) -> rounded up to 512 px tiles: 2048 x 2048, 4 x 4 tiles + global.
    assert tokens(capsys, argv) == 64  # paper: the global image alone
    assert tokens(capsys, [*argv, "--image_splitting"]) == (4 * 4 + 1) * 64
    assert tokens(capsys, [*argv, "--protocol", "native"]) == (4 * 4 + 1) * 64  # the published do_image_splitting
    assert tokens(capsys, [*argv, "--protocol", "native", "--no_image_splitting"]) == 64
