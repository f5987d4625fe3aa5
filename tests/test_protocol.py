"""The page protocol: the paper's budget by default, the checkpoint's with `native`, overrides effective.

Hub-format Qwen2-VL configs carry top-level min/max_pixels that used to silently replace the budget
(a 635x482 step1 page became 391 tokens instead of <= 256). Token counts are worked by hand with
Qwen2-VL's smart_resize (factor 28): round each side to 28, then rescale by sqrt(pixels / bound)
(floor when above max_pixels, ceil when below min_pixels).
"""

import json

import pytest
from PIL import Image

from ocr_heads.models import load_adapter
from ocr_heads.models.qwen2_vl import PAPER_PIXELS, pixel_budget
from ocr_heads.scores.rules import char_targets
from tests.hub_format import hub_format_qwen2_vl

STEP1_PAGE = (635, 482)  # a rendered step1 page
TOY_PAGE = (448, 168)  # a toy page: 16 x 6 tiles of 28 px


@pytest.fixture(scope="module")
def hub_dir(tiny_model_dir, tmp_path_factory):
    return hub_format_qwen2_vl(tiny_model_dir, tmp_path_factory.mktemp("hub") / "Qwen2-VL-2B-Instruct-tiny")


def page_tokens(adapter, size):
    inputs = adapter.image_inputs([Image.new("RGB", size, "white")], "What is the pass key?")
    (tokens,) = inputs.image_tokens
    assert int((inputs.input_ids == adapter.image_token_id).sum()) == tokens.count
    return tokens.count


def test_hub_config_paper_protocol_gives_the_budget(hub_dir):
    adapter = load_adapter(str(hub_dir), weights=False)  # protocol paper is the default
    assert adapter.protocol == "paper"
    assert (adapter.image_processor.size.shortest_edge, adapter.image_processor.size.longest_edge) == (200704, 200704)
    # 635x482 -> 644x476 (306544 px > 200704): beta = sqrt(306070 / 200704) = 1.2349;
    # floor(482 / 1.2349 / 28) = 13 rows, floor(635 / 1.2349 / 28) = 18 cols.
    assert page_tokens(adapter, STEP1_PAGE) == 13 * 18
    # 448x168 (75264 px < 200704) is upscaled: beta = sqrt(200704 / 75264) = 1.6330;
    # ceil(168 * 1.6330 / 28) = 10 rows, ceil(448 * 1.6330 / 28) = 27 cols.
    assert page_tokens(adapter, TOY_PAGE) == 10 * 27
    assert adapter.settings() == {"protocol": "paper", "min_pixels": 200704, "max_pixels": 200704}
    assert [adapter.expected_tokens(size) for size in (STEP1_PAGE, TOY_PAGE)] == [13 * 18, 10 * 27]


def test_hub_config_native_protocol_keeps_the_checkpoints_bounds(hub_dir):
    adapter = load_adapter(str(hub_dir), protocol="native", weights=False)
    assert (adapter.min_pixels, adapter.max_pixels) == (3136, 12845056)
    # Within bounds: only rounded to 28 px, 482 -> 476 (17 rows), 635 -> 644 (23 cols).
    assert page_tokens(adapter, STEP1_PAGE) == 17 * 23
    assert page_tokens(adapter, TOY_PAGE) == 6 * 16


def test_explicit_pixels_are_effective_on_hub_configs(hub_dir):
    for protocol in ("paper", "native"):
        adapter = load_adapter(str(hub_dir), protocol=protocol, min_pixels=3136, max_pixels=100352, weights=False)
        assert (adapter.min_pixels, adapter.max_pixels) == (3136, 100352)
        # beta = sqrt(306070 / 100352) = 1.7464: floor(482 / 1.7464 / 28) = 9, floor(635 / 1.7464 / 28) = 12.
        assert page_tokens(adapter, STEP1_PAGE) == 9 * 12
    # Only a max below the paper's budget: the budget's min follows it down.
    adapter = load_adapter(str(hub_dir), max_pixels=100352, weights=False)
    assert (adapter.min_pixels, adapter.max_pixels) == (100352, 100352)


def test_pixel_budget_rules():
    assert pixel_budget("paper", None, None) == {"min_pixels": PAPER_PIXELS, "max_pixels": PAPER_PIXELS}
    assert pixel_budget("paper", 3136, None) == {"min_pixels": 3136, "max_pixels": PAPER_PIXELS}
    assert pixel_budget("paper", 400000, None) == {"min_pixels": 400000, "max_pixels": 400000}
    assert pixel_budget("paper", None, 50000) == {"min_pixels": 50000, "max_pixels": 50000}
    assert pixel_budget("native", None, None) == {}
    assert pixel_budget("native", None, 50000) == {"max_pixels": 50000}
    with pytest.raises(ValueError, match="min_pixels 9 > max_pixels 8"):
        pixel_budget("native", 9, 8)
    with pytest.raises(ValueError, match="unknown protocol"):
        pixel_budget("authors", None, None)


def test_an_ignored_budget_is_an_error(hub_dir, monkeypatch):
    """If the processor does not honour the budget (as before the fix), loading fails instead of drifting."""
    from transformers import AutoImageProcessor

    import ocr_heads.models.qwen2_vl as qwen2_vl

    class IgnoresBudget:
        @staticmethod
        def from_pretrained(model_id, **kwargs):
            return AutoImageProcessor.from_pretrained(model_id)  # the config's top-level bounds win

    monkeypatch.setattr(qwen2_vl, "AutoImageProcessor", IgnoresBudget)
    with pytest.raises(ValueError, match="it uses {'min_pixels': 3136, 'max_pixels': 12845056}"):
        load_adapter(str(hub_dir), weights=False)


@pytest.fixture(scope="module")
def internvl_dir(tmp_path_factory):
    from ocr_heads.models.tiny.build import build_tiny_internvl

    return build_tiny_internvl(tmp_path_factory.mktemp("models") / "tiny-internvl")  # max_patches 6 in its config


def test_internvl_paper_protocol_is_one_tile_without_thumbnail(internvl_dir):
    page = Image.new("RGB", STEP1_PAGE, "white")
    box = [100.0, 100.0, 110.0, 120.0]  # one character
    paper = load_adapter(str(internvl_dir), weights=False)
    assert paper.settings() == {"protocol": "paper", "min_patches": 1, "max_patches": 1, "thumbnail": False}
    inputs = paper.image_inputs([page], "What is the pass key?")
    assert inputs.tensors["pixel_values"].shape[0] == 1
    (tokens,) = inputs.image_tokens
    assert tokens.count == 256 == int((inputs.input_ids == paper.image_token_id).sum())
    # The page squeezed into one 448 px tile: tokens are 635/16 x 482/16 px on the page. The box lies in
    # column floor(100 / 39.69) = 2, row floor(100 / 30.125) = 3 -> token 3 * 16 + 2, and nowhere else.
    assert char_targets([{0: [box]}], inputs.image_tokens) == [{tokens.start + 50}]

    native = load_adapter(str(internvl_dir), protocol="native", weights=False)
    inputs = native.image_inputs([page], "What is the pass key?")
    (tokens,) = inputs.image_tokens
    # The published max_patches 12: 4 x 3 tiles + thumbnail.
    assert tokens.count == 13 * 256 == native.expected_tokens(STEP1_PAGE)
    # The thumbnail's token over the box is a target too: the paper never has one.
    assert tokens.start + 12 * 256 + 50 in char_targets([{0: [box]}], inputs.image_tokens)[0]

    override = load_adapter(str(internvl_dir), max_patches=6, weights=False)
    assert override.protocol == "paper" and override.image_inputs([page], "q").image_tokens[0].count == 7 * 256


def test_protocol_names_are_checked(hub_dir):
    with pytest.raises(ValueError, match="unknown protocol 'fast'"):
        load_adapter(str(hub_dir), protocol="fast", weights=False)


def test_step2_meta_records_the_protocol_and_tokens_per_page(hub_dir, passkey_dir, tmp_path):
    from ocr_heads.core.io import read_jsonl
    from ocr_heads.pipeline.step2 import main

    for protocol, tokens in (("paper", 13 * 18), ("native", 17 * 23)):  # step1 pages are 635x482
        out = tmp_path / protocol
        argv = ["--model_id", str(hub_dir), "--data", str(passkey_dir), "--out", str(out), "--n", "2",
                "--max_new_tokens", "2", "--protocol", protocol]
        # A random model does not answer: the run writes its files and exits 3 (no answer-token events).
        assert main("image", argv) in (0, 3)
        stem = out / "image" / f"{hub_dir.name}_fg"
        meta = json.loads(stem.with_suffix(".meta.json").read_text())
        assert meta["protocol"]["protocol"] == protocol
        assert meta["protocol"]["max_pixels"] == {"paper": 200704, "native": 12845056}[protocol]
        pages = [n for record in read_jsonl(stem.with_suffix(".samples.jsonl")) for n in record["image_tokens"]]
        assert pages and set(pages) == {tokens}
        assert meta["image_tokens_per_page"] == {"pages": len(pages), "min": tokens, "max": tokens,
                                                 "mean": float(tokens), "counts": {str(tokens): len(pages)}}
