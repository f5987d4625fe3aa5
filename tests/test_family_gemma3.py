"""Gemma 3: 256 pooled tokens per 896 px image (and per pan-and-scan crop) against the processor's pixels,
bidirectional image attention in prefill, sliding-window layers, and the family battery."""

import numpy as np
import pytest
import torch
from family_battery import (
    STEP1_PAGE,
    block_means,
    build_tiny_family,
    check_capture_equals_eager,
    check_masking_equals_o_proj_hook,
    check_sink_equals_eager_reference,
    check_step1_to_step3,
    page_intensity,
    page_with_squares,
)
from PIL import Image, ImageDraw
from test_interventions import REFERENCE_BETA, REFERENCE_HEADS
from transformers import AttentionInterface

from ocr_heads.attention import text_attention
from ocr_heads.models import load_adapter
from ocr_heads.models.gemma3 import Gemma3Adapter


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_family(tmp_path_factory, "gemma3")  # the acceptance command


@pytest.fixture(scope="module")
def adapter(model_dir):
    return load_adapter(str(model_dir))


def processor_intensity(pixel_values: torch.Tensor, side: int) -> np.ndarray:
    """Per LLM token (images in order, each a row-major side x side grid), the mean intensity of its pooled block."""
    return block_means(pixel_values[:, 0] * 0.5 + 0.5, side)  # undo the normalisation: 0 black .. 1 white


@pytest.mark.parametrize("pan_and_scan", [False, True])
@pytest.mark.parametrize("size", [STEP1_PAGE, (1200, 400), (300, 900), (500, 500)])
def test_tokens_show_what_the_processor_pixels_show(adapter, size, pan_and_scan):
    adapter.image_processor.do_pan_and_scan = pan_and_scan
    try:
        page = page_with_squares(size)
        inputs = adapter.image_inputs([page, page], "q?")
        runs = inputs.image_tokens
        images = inputs.tensors["pixel_values"].shape[0]
        assert len(runs) == images and all(run.count == 256 for run in runs)
        ids = inputs.input_ids[0]
        assert int((ids == adapter.image_token_id).sum()) == 256 * images  # the processor's count
        assert torch.equal(inputs.tensors["token_type_ids"][0], (ids == adapter.image_token_id).long())
        with torch.no_grad():
            features = adapter.model.model.get_image_features(pixel_values=inputs.tensors["pixel_values"])
        assert features.pooler_output.reshape(-1, features.pooler_output.shape[-1]).shape[0] == 256 * images
        if pan_and_scan and size != (500, 500):
            assert images > 2  # crops were made
        shown = processor_intensity(inputs.tensors["pixel_values"], adapter.side)
        boxes = np.concatenate([run.tile_boxes for run in runs])
        ours = page_intensity(page, boxes)
        assert np.corrcoef(ours, shown)[0, 1] > 0.95 and np.abs(ours - shown).mean() < 0.05
        # Each image's tokens partition its region: the page (first run of each page) is covered exactly.
        whole = runs[0].tile_boxes
        np.testing.assert_allclose(((whole[:, 2] - whole[:, 0]) * (whole[:, 3] - whole[:, 1])).sum(),
                                   size[0] * size[1])
        # A deliberately wrong order (transposed grid) disagrees.
        transposed = np.concatenate([run.tile_boxes.reshape(16, 16, 4).transpose(1, 0, 2).reshape(-1, 4)
                                     for run in runs])
        assert np.corrcoef(page_intensity(page, transposed), shown)[0, 1] < 0.8
    finally:
        adapter.image_processor.do_pan_and_scan = False


def test_black_square_lands_in_the_tokens_that_show_it(adapter):
    page = Image.new("RGB", STEP1_PAGE, "white")
    square = (480, 40, 600, 140)  # top right: off the diagonal, so a transposed grid misses it
    ImageDraw.Draw(page).rectangle(square, fill="black")
    inputs = adapter.image_inputs([page], "q?")
    boxes = inputs.image_tokens[0].tile_boxes
    shown = processor_intensity(inputs.tensors["pixel_values"], adapter.side)

    def inside(b):
        return np.flatnonzero((b[:, 0] >= square[0]) & (b[:, 1] >= square[1]) & (b[:, 2] <= square[2])
                              & (b[:, 3] <= square[3]))

    assert inside(boxes).size and shown[inside(boxes)].max() < 0.2
    wrong = boxes.reshape(16, 16, 4).transpose(1, 0, 2).reshape(-1, 4)
    assert shown[inside(wrong)].min() > 0.5


def test_image_tokens_attend_bidirectionally_only_with_token_type_ids(adapter):
    """The first image token sees the later ones of its image in prefill (changing a later image token's
    embedding changes its output) only when token_type_ids are passed, as the adapter always does."""
    inputs = adapter.image_inputs([Image.new("RGB", STEP1_PAGE, "white")], "q?")
    start = inputs.image_tokens[0].start
    with text_attention(adapter, "eager"), torch.no_grad():
        with_types = adapter.model(**inputs.tensors, output_attentions=True).attentions[0][0]
        causal = dict(inputs.tensors)
        del causal["token_type_ids"]
        without = adapter.model(**causal, output_attentions=True).attentions[0][0]
    assert with_types[:, start, start + 1 : start + 256].sum() > 0.5  # sees its image's later tokens
    assert without[:, start, start + 1 :].sum() == 0
    assert with_types[:, start + 255, start + 256 :].sum() == 0  # never the text after the image


# ---------------------------------------------------------------- the battery

REFERENCE = "test_gemma3_sink_reference"
TOKEN_TYPES: list[torch.Tensor] = []


def gemma3_sink_reference(module, query, key, value, attention_mask, scaling=None, sliding_window=None, **kwargs):
    """Eager attention with Gemma 3's prefill mask written out plainly (causal, or both in the same image; within
    the window on sliding layers; no cache: q_len == k_len), then the sink edit row by row on the chosen heads."""
    groups = query.shape[1] // key.shape[1]
    k, v = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    scores = query @ k.transpose(-1, -2) * scaling
    n = scores.shape[-1]
    image = TOKEN_TYPES[0][0].bool()
    block = torch.cumsum(image & ~torch.cat([torch.tensor([False]), image[:-1]]), 0)
    i, j = torch.arange(n)[:, None], torch.arange(n)[None, :]
    allowed = (j <= i) | (image[:, None] & image[None, :] & (block[:, None] == block[None, :]))
    if sliding_window is not None:
        allowed &= j > i - sliding_window
    probs = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
    beta = REFERENCE_BETA[0]
    for head in REFERENCE_HEADS.get(module.layer_idx, []):
        for row in range(n):
            p = probs[0, head, row].clone()
            others = p[1:] * allowed[row, 1:]
            if not allowed[row, 0] or others.sum() == 0:
                continue
            probs[0, head, row, 0] = beta * p[0]
            probs[0, head, row, 1:] = others + (1 - beta) * p[0] * others / others.sum()
    return (probs @ v).transpose(1, 2).contiguous(), probs


AttentionInterface.register(REFERENCE, gemma3_sink_reference)


def set_token_types(tensors):
    TOKEN_TYPES[:] = [tensors["token_type_ids"]]


def test_capture_equals_eager(adapter, passkey_dir):
    check_capture_equals_eager(adapter, passkey_dir)


def test_masking_equals_o_proj_hook(adapter, passkey_dir):
    check_masking_equals_o_proj_hook(adapter, passkey_dir, [(1, 2), (2, 0)])


def test_sink_equals_eager_reference(adapter, passkey_dir):
    check_sink_equals_eager_reference(adapter, passkey_dir, {0: [1], 2: [3, 0]}, reference=REFERENCE,
                                      configure=set_token_types)


def test_step1_to_step3(model_dir, tmp_path):
    check_step1_to_step3(model_dir, tmp_path, num_layers=6, num_heads=4)  # one period of the 5:1 pattern


def test_unsupported_arguments_are_refused(model_dir):
    with pytest.raises(ValueError, match="max_patches"):
        Gemma3Adapter(str(model_dir), max_patches=2)


def test_capture_applies_the_sliding_window(tmp_path, passkey_dir):
    """A window far shorter than the prompt (sliding layers then cache only its last keys): captured argmax and
    sink still equal eager attention, positions counted from the start of the prompt."""
    from ocr_heads.models.tiny.gemma3 import build_tiny_gemma3

    adapter = load_adapter(str(build_tiny_gemma3(tmp_path / "tiny-gemma3-window", sliding_window=24)))
    assert adapter.model.config.text_config.layer_types[:2] == ["sliding_attention"] * 2
    check_capture_equals_eager(adapter, passkey_dir, steps=4)


def test_a_character_is_targeted_in_the_page_and_in_its_crop(adapter):
    """Pan-and-scan: a page has several runs; a character box targets tokens in the whole-page run and in the
    crop that holds it (scoring unions all runs of a page)."""
    from ocr_heads.scores.rules import char_targets

    adapter.image_processor.do_pan_and_scan = True
    try:
        inputs = adapter.image_inputs([Image.new("RGB", STEP1_PAGE, "white")], "q?")
    finally:
        adapter.image_processor.do_pan_and_scan = False
    whole, left, right = inputs.image_tokens
    assert [run.page for run in inputs.image_tokens] == [0, 0, 0]
    np.testing.assert_allclose(left.tile_boxes[-1, 2:], [318, 482])  # crops: ceil(635 / 2) = 318 px wide
    np.testing.assert_allclose(right.tile_boxes[0, :2], [318, 0])
    (targets,) = char_targets([{0: [[100, 100, 110, 115]]}], inputs.image_tokens)
    in_run = [{t - run.start for t in targets if run.start <= t < run.start + run.count} for run in (whole, left,
                                                                                                  right)]
    assert in_run[0] and in_run[1] and not in_run[2]
    assert sum(map(len, in_run)) == len(targets)


@pytest.mark.parametrize("size", [STEP1_PAGE, (1200, 400), (300, 900), (500, 500), (2000, 300), (260, 250)])
def test_expected_tokens_match_the_processor_crops(model_dir, size):
    """expected_tokens (the settings' arithmetic) against the crops the processor's own pan_and_scan makes."""
    adapter = load_adapter(str(model_dir), pan_and_scan=True, weights=False)
    crops = int(adapter.image_processor(images=[Image.new("RGB", size, "white")], return_tensors="pt")["num_crops"][0])
    assert adapter.expected_tokens(size) == 256 * (1 + crops)
    assert load_adapter(str(model_dir), weights=False).expected_tokens(size) == 256  # paper: no crops


def test_paper_turns_pan_and_scan_off_native_keeps_the_checkpoints(model_dir, tmp_path):
    import json
    import shutil

    scan_dir = tmp_path / "pan-and-scan"
    shutil.copytree(model_dir, scan_dir)
    config_path = scan_dir / "preprocessor_config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "do_pan_and_scan": True}))
    paper = load_adapter(str(scan_dir), weights=False)
    native = load_adapter(str(scan_dir), protocol="native", weights=False)
    assert paper.settings() == {"protocol": "paper", "tokens_per_image": 256, "pan_and_scan": False}
    assert native.settings() == {"protocol": "native", "tokens_per_image": 256, "pan_and_scan": True,
                                 "min_crop_size": 256, "max_num_crops": 4, "min_ratio_to_activate": 1.2}
    page = Image.new("RGB", STEP1_PAGE, "white")
    assert [t.count for t in paper.image_inputs([page], "q?").image_tokens] == [256]
    assert [t.count for t in native.image_inputs([page], "q?").image_tokens] == [256] * 3  # page + 2 crops
    assert native.expected_tokens(STEP1_PAGE) == 3 * 256
