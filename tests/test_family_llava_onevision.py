"""LLaVA-OneVision: token boxes against the processor's pixels as the model itself packs them (anyres crops +
base image, unpadding, one newline per row, the anyres_max shrink, multi-page squares), and the family battery."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from family_battery import (
    STEP1_PAGE,
    build_tiny_family,
    check_capture_equals_eager,
    check_masking_equals_o_proj_hook,
    check_sink_equals_eager_reference,
    check_step1_to_step3,
    page_intensity,
    page_with_squares,
)
from PIL import Image, ImageDraw
from transformers.models.llava_onevision.processing_llava_onevision import LlavaOnevisionProcessor

from ocr_heads.models import load_adapter
from ocr_heads.models.llava_onevision import LlavaOnevisionAdapter

SIZES = [STEP1_PAGE, (300, 900), (1200, 400), (384, 384), (200, 150)]
NEWLINE = -1.0  # marks the newline embedding in the packed intensities


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_family(tmp_path_factory, "llava_onevision", "tiny-llava-onevision")  # the acceptance command


@pytest.fixture(scope="module")
def adapter(model_dir):
    return load_adapter(str(model_dir))


def processor_token_count(adapter, page_size: tuple[int, int], pages: int) -> int:
    """The count LlavaOnevisionProcessor itself puts in input_ids (its own method; the class needs torchvision
    to be built, so it runs on a namespace carrying the processor's settings)."""
    config = adapter.model.config
    processor = SimpleNamespace(image_processor=adapter.image_processor, num_image_tokens=adapter.grid**2,
                                vision_aspect_ratio=config.vision_aspect_ratio,
                                vision_feature_select_strategy=config.vision_feature_select_strategy,
                                image_token="<image>")
    processor._get_number_of_features = LlavaOnevisionProcessor._get_number_of_features.__get__(processor)
    processor._get_unpadded_features = LlavaOnevisionProcessor._get_unpadded_features.__get__(processor)
    width, height = page_size
    inputs = {"batch_num_images": [pages], "image_sizes": [[height, width]] * pages,
              "pixel_values": [[torch.zeros(3, adapter.side, adapter.side)]]}
    return len(LlavaOnevisionProcessor.replace_image_token(processor, inputs, 0)) // len("<image>")


def packed_intensity(adapter, inputs) -> list[np.ndarray]:
    """Per image token, the mean processor-pixel intensity of the feature the model puts there, packed by the
    model's own pack_image_features (NEWLINE where it puts its newline embedding)."""
    pixels = inputs.tensors["pixel_values"][:, :, 0] * 0.5 + 0.5  # undo SigLIP's normalisation: 0 black .. 1 white
    g, p = adapter.grid, adapter.patch
    cells = pixels[..., : g * p, : g * p].reshape(*pixels.shape[:2], g, p, g, p).mean(dim=(3, 5))
    num_images = len(inputs.tensors["image_sizes"])
    crops = cells.shape[1] if num_images == 1 else 1  # several pages: one square image each, no anyres
    features = [cells[i, :crops].reshape(crops, g * g, 1) for i in range(num_images)]
    packed, _ = adapter.model.model.pack_image_features(
        features, inputs.tensors["image_sizes"], image_newline=torch.tensor([NEWLINE]),
        vision_aspect_ratio=adapter.model.config.vision_aspect_ratio)
    return [per_page.squeeze(-1).numpy() for per_page in packed]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("pages", [1, 2])
def test_token_counts_equal_processor_and_model(adapter, size, pages):
    inputs = adapter.image_inputs([Image.new("RGB", size, "white")] * pages, "What is the pass key?")
    expected = processor_token_count(adapter, size, pages)
    assert [t.count for t in inputs.image_tokens] == [expected] * pages
    assert int((inputs.input_ids == adapter.image_token_id).sum()) == expected * pages
    with torch.no_grad():
        features = adapter.model.model.get_image_features(
            pixel_values=inputs.tensors["pixel_values"], image_sizes=inputs.tensors["image_sizes"],
            batch_num_images=inputs.tensors["batch_num_images"]).pooler_output
    assert [len(f) for f in features] == [expected] * pages  # the model packs exactly that many per page
    if pages == 2:
        assert expected == adapter.grid**2 + 1  # one square image + its newline


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("pages", [1, 2])
def test_every_box_shows_what_the_model_packs_there(adapter, size, pages):
    """Per token, the page inside its box and the processor's pixels the model packs there agree; the newline
    positions (and cells of pure padding) are exactly the NaN boxes; a wrong order disagrees."""
    page = page_with_squares(size)
    inputs = adapter.image_inputs([page] * pages, "q?")
    for tokens, shown in zip(inputs.image_tokens, packed_intensity(adapter, inputs), strict=True):
        boxes = tokens.tile_boxes
        no_pixels = np.isnan(boxes).any(axis=1)
        assert np.isnan(boxes[no_pixels]).all()
        # Newlines are NaN; so is a cell that shows only padding (centred square padding of a wide/tall page).
        assert set(np.flatnonzero(shown == NEWLINE)) <= set(np.flatnonzero(no_pixels))
        padding_only = no_pixels & (shown != NEWLINE)
        if pages == 1:  # unpadding dropped every cell of pure padding
            assert not padding_only.any()
        else:  # square padding is the mean colour, 127 of 255
            np.testing.assert_allclose(shown[padding_only], 127 / 255, atol=0.01)  # resampling bleeds a little
        # Compare cells inside the page (a cell clipped at the border also shows padding in the processor's pixels).
        with np.errstate(invalid="ignore"):
            seen = (boxes[:, 0] > 0) & (boxes[:, 1] > 0) & (boxes[:, 2] < size[0]) & (boxes[:, 3] < size[1])
        ours = page_intensity(page, boxes[seen])
        assert np.corrcoef(ours, shown[seen])[0, 1] > 0.95
        assert np.abs(ours - shown[seen]).mean() < 0.05
        assert np.corrcoef(ours[::-1], shown[seen])[0, 1] < 0.5  # deliberately wrong order


def test_black_square_lands_in_the_tokens_that_show_it(adapter):
    page = Image.new("RGB", STEP1_PAGE, "white")
    square = (300, 200, 380, 280)
    ImageDraw.Draw(page).rectangle(square, fill="black")
    inputs = adapter.image_inputs([page], "q?")
    boxes = inputs.image_tokens[0].tile_boxes
    shown = packed_intensity(adapter, inputs)[0]
    with np.errstate(invalid="ignore"):
        inside = np.flatnonzero((boxes[:, 0] >= square[0]) & (boxes[:, 1] >= square[1]) & (boxes[:, 2] <= square[2])
                                & (boxes[:, 3] <= square[3]))
    base = adapter.grid**2
    assert (inside < base).any() and (inside >= base).any()  # the base image and the crops both show it
    assert shown[inside].max() < 0.2
    # A deliberately wrong order: the newline tokens forgotten (all NaN slots moved to the end).
    crops = boxes[base:]
    newline = np.isnan(crops).any(axis=1)
    wrong = np.concatenate([boxes[:base], crops[~newline], crops[newline]])
    with np.errstate(invalid="ignore"):
        wrong_inside = np.flatnonzero((wrong[:, 0] >= square[0]) & (wrong[:, 1] >= square[1])
                                      & (wrong[:, 2] <= square[2]) & (wrong[:, 3] <= square[3]))
    assert shown[wrong_inside[wrong_inside >= base]].min() > 0.5


def test_anyres_max_shrink_is_followed(model_dir):
    """With anyres_max_1 the model shrinks the crop grid bilinearly: counts and boxes follow it."""
    adapter = LlavaOnevisionAdapter(str(model_dir))
    adapter.model.config.vision_aspect_ratio = "anyres_max_1"
    adapter.max_crops = 1
    page = page_with_squares(STEP1_PAGE)
    inputs = adapter.image_inputs([page], "q?")
    count = inputs.image_tokens[0].count
    assert count == processor_token_count(adapter, STEP1_PAGE, 1) < adapter.grid**2 * 2 + 60
    shown = packed_intensity(adapter, inputs)[0]
    boxes = inputs.image_tokens[0].tile_boxes
    seen = ~np.isnan(boxes).any(axis=1)
    assert np.corrcoef(page_intensity(page, boxes[seen]), shown[seen])[0, 1] > 0.9


def test_capture_equals_eager(adapter, passkey_dir):
    check_capture_equals_eager(adapter, passkey_dir, steps=3)


def test_masking_equals_o_proj_hook(adapter, passkey_dir):
    check_masking_equals_o_proj_hook(adapter, passkey_dir, [(1, 2), (2, 0)])


def test_sink_equals_eager_reference(adapter, passkey_dir):
    check_sink_equals_eager_reference(adapter, passkey_dir, {0: [1], 2: [3, 0]})


def test_step1_to_step3(model_dir, tmp_path):
    check_step1_to_step3(model_dir, tmp_path, num_layers=3, num_heads=4)


def test_newline_positions_are_never_targets(adapter):
    """A box over the whole page covers every token that shows pixels, and no newline position."""
    from ocr_heads.scores.rules import char_targets

    inputs = adapter.image_inputs([Image.new("RGB", STEP1_PAGE, "white")], "q?")
    tokens = inputs.image_tokens[0]
    newlines = np.flatnonzero(~tokens.shows_pixels)
    assert len(newlines) > 10 and all(inputs.input_ids[0, tokens.start + n] == adapter.image_token_id
                                      for n in newlines)  # they are image-token ids in input_ids ...
    (targets,) = char_targets([{0: [[0, 0, *STEP1_PAGE]]}], inputs.image_tokens, threshold=0.0)
    # ... but never targets, whatever the threshold.
    assert targets == {tokens.start + t for t in np.flatnonzero(tokens.shows_pixels)}


@pytest.mark.parametrize("size", SIZES + [(2000, 300), (100, 1500)])
def test_expected_tokens_match_the_processor_count(adapter, model_dir, size):
    """expected_tokens (plain arithmetic on the settings) against LlavaOnevisionProcessor's own count; both
    protocols are the checkpoint's anyres (the paper has no LLaVA-OneVision setting)."""
    expected = processor_token_count(adapter, size, 1)
    assert adapter.expected_tokens(size) == expected
    native = load_adapter(str(model_dir), protocol="native", weights=False)
    assert native.expected_tokens(size) == expected
    assert native.settings() == {**adapter.settings(), "protocol": "native"}
    assert adapter.settings() == {"protocol": "paper", "image_size": 384, "patch_size": 14, "grid_pinpoints": 36,
                                  "vision_aspect_ratio": "anyres_max_9"}
