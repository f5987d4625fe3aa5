"""InternVL3.5 (-hf, Qwen3 language model) and InternVL3 (Qwen2): the family battery on tiny models built by the
acceptance command, plus the paper protocol (one 448 px tile, no thumbnail) against native tiling."""

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
)
from PIL import Image, ImageDraw

from ocr_heads.models import load_adapter
from ocr_heads.models.internvl import IMAGENET_MEAN, IMAGENET_STD


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_family(tmp_path_factory, "internvl", "tiny-internvl3_5")  # the acceptance command


@pytest.fixture(scope="module")
def adapter(model_dir):
    return load_adapter(str(model_dir))


@pytest.fixture(scope="module")
def paper_adapter(model_dir):
    """The paper protocol: one 448 px tile per page, no thumbnail (256 tokens: keeps the battery fast)."""
    return load_adapter(str(model_dir), max_patches=1)


def processor_intensity(pixel_values: torch.Tensor, grid: int) -> np.ndarray:
    """Per LLM token (tiles in order, each a row-major grid), the mean intensity of its block of processor pixels."""
    # undo the normalisation: 0 black .. 1 white
    return block_means(pixel_values[:, 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0], grid)


def inside(boxes: np.ndarray, square: tuple[int, int, int, int]) -> np.ndarray:
    """Indices of the token boxes that lie wholly inside ``square``."""
    x0, y0, x1, y1 = square
    return np.flatnonzero((boxes[:, 0] >= x0) & (boxes[:, 1] >= y0) & (boxes[:, 2] <= x1) & (boxes[:, 3] <= y1))


def test_language_model_is_qwen3(adapter):
    text = adapter.model.config.text_config
    assert text.model_type == "qwen3" and text.head_dim == 16
    attention = adapter.attention_modules()[0]
    assert hasattr(attention, "q_norm") and hasattr(attention, "k_norm")  # Qwen3's per-head RMS norms


@pytest.mark.parametrize(("protocol", "tiles"), [("paper", 1), ("native", 13)])
def test_token_count_equals_the_processor_and_the_vision_features(adapter, protocol, tiles):
    """Paper protocol: 1 tile = 256 tokens; native (the published max_patches 12): 4x3 tiles + thumbnail = 13 x 256."""
    paper = load_adapter(str(adapter.model.name_or_path), protocol=protocol)
    assert paper.max_patches == {"paper": 1, "native": 12}[protocol]
    assert paper.expected_tokens(STEP1_PAGE) == tiles * 256
    page = Image.new("RGB", STEP1_PAGE, "white")
    inputs = paper.image_inputs([page], "What is the pass key?")
    ids = inputs.input_ids[0]
    count = int((ids == paper.image_token_id).sum())
    assert count == inputs.image_tokens[0].count == tiles * paper.model.config.image_seq_length
    assert inputs.tensors["pixel_values"].shape[0] == tiles
    with torch.no_grad():
        features = paper.model.model.get_image_features(pixel_values=inputs.tensors["pixel_values"])
    features = getattr(features, "pooler_output", features)
    assert sum(f.reshape(-1, f.shape[-1]).shape[0] for f in features) == count
    # Tiles of the local grid partition the page exactly (paper: one tile = the whole page, 16 x 16 cells).
    local = inputs.image_tokens[0].tile_boxes[: (tiles - (tiles > 1)) * 256]
    area = ((local[:, 2] - local[:, 0]) * (local[:, 3] - local[:, 1])).sum()
    np.testing.assert_allclose(area, STEP1_PAGE[0] * STEP1_PAGE[1])
    np.testing.assert_allclose(local.min(axis=0)[:2], 0, atol=1e-9)
    np.testing.assert_allclose(local.max(axis=0)[2:], STEP1_PAGE)


@pytest.mark.parametrize("max_patches", [1, 6])
def test_black_square_lands_in_the_tokens_that_show_it(adapter, max_patches):
    native = adapter.max_patches
    adapter.max_patches = max_patches
    try:
        page = Image.new("RGB", STEP1_PAGE, "white")
        square = (300, 200, 380, 280)
        ImageDraw.Draw(page).rectangle(square, fill="black")
        inputs = adapter.image_inputs([page], "q?")
        boxes = inputs.image_tokens[0].tile_boxes
        shown = processor_intensity(inputs.tensors["pixel_values"], adapter.grid)
        targets = inside(boxes, square)
        assert targets.size and shown[targets].max() < 0.2  # every token inside the square shows black pixels
        # ... and the tokens that show black are the ones whose page boxes hold black.
        assert np.corrcoef(page_intensity(page, boxes), shown)[0, 1] > 0.95
        # A deliberately wrong order (tokens reversed inside each tile) puts the square on white tokens.
        wrong = boxes.reshape(-1, 256, 4)[:, ::-1].reshape(-1, 4)
        assert shown[inside(wrong, square)].min() > 0.5
    finally:
        adapter.max_patches = native


def test_capture_equals_eager(model_dir, paper_adapter, passkey_dir):
    check_capture_equals_eager(paper_adapter, passkey_dir)
    # Multi-tile pages (3 x 2 tiles + thumbnail: 7 tiles a page; native's 13 would only cost time).
    check_capture_equals_eager(load_adapter(str(model_dir), max_patches=6), passkey_dir, steps=2)


def test_masking_equals_o_proj_hook(paper_adapter, passkey_dir):
    check_masking_equals_o_proj_hook(paper_adapter, passkey_dir, [(1, 2), (2, 0)])


def test_sink_equals_eager_reference(paper_adapter, passkey_dir):
    check_sink_equals_eager_reference(paper_adapter, passkey_dir, {0: [1], 2: [3, 0]})


def test_step1_to_step3(model_dir, tmp_path):
    check_step1_to_step3(model_dir, tmp_path, num_layers=3, num_heads=4)


def test_internvl3_qwen2_language_model(tmp_path, passkey_dir):
    """InternVL3 -hf checkpoints carry a Qwen2 language model: same adapter, capture == eager."""
    from ocr_heads.models.tiny.build import build_tiny_internvl

    adapter = load_adapter(str(build_tiny_internvl(tmp_path / "tiny-internvl3", language_model="qwen2")))
    assert adapter.model.config.text_config.model_type == "qwen2"
    check_capture_equals_eager(adapter, passkey_dir, steps=3)
    with pytest.raises(ValueError, match="language model"):
        build_tiny_internvl(tmp_path / "bad", language_model="llama")
