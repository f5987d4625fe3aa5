"""The Qwen2-VL adapter: geometry against the real image processor, M-RoPE inputs, loading, errors."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

from ocr_heads.core.errors import UserError
from ocr_heads.models import load_adapter, model_type

PAGE_SIZES = [(635, 482), (300, 900), (1200, 400), (56, 56), (1000, 1000), (517, 233)]


@pytest.mark.parametrize("size", PAGE_SIZES)
def test_token_tiles_follow_the_processor_grid(tiny_adapter, size):
    page = Image.new("RGB", size, "white")
    inputs = tiny_adapter.image_inputs([page, page], "q?")
    # The paper protocol (the default): min = max = 256*28*28 pixels, small pages upscaled.
    height, width = smart_resize(size[1], size[0], factor=28, min_pixels=256 * 28 * 28, max_pixels=256 * 28 * 28)
    rows, cols = height // 28, width // 28
    grid = inputs.tensors["image_grid_thw"]
    assert grid.tolist() == [[1, rows * 2, cols * 2]] * 2
    for tokens in inputs.image_tokens:
        assert tokens.count == rows * cols
        boxes = tokens.tile_boxes
        # Row-major tiles that exactly cover the original page.
        k = np.arange(rows * cols)
        np.testing.assert_allclose(boxes[:, 0], (k % cols) * size[0] / cols)
        np.testing.assert_allclose(boxes[:, 1], (k // cols) * size[1] / rows)
        np.testing.assert_allclose(boxes[-1, 2:], size)
    ids = inputs.input_ids[0]
    image_id = tiny_adapter.model.config.image_token_id
    assert int((ids == image_id).sum()) == sum(t.count for t in inputs.image_tokens)
    assert int(grid.prod(dim=1).sum()) // 4 == int((ids == image_id).sum())
    assert inputs.image_tokens[1].start > inputs.image_tokens[0].start + inputs.image_tokens[0].count


def test_tile_order_matches_processor_pixels(tiny_adapter):
    """A black square drawn on the page lands in the token whose processor patches are dark."""
    size = (640, 480)
    page = Image.new("RGB", size, "white")
    square = (400, 300, 430, 330)
    ImageDraw.Draw(page).rectangle(square, fill="black")
    inputs = tiny_adapter.image_inputs([page], "q?")
    boxes = inputs.image_tokens[0].tile_boxes
    cx, cy = (square[0] + square[2]) / 2, (square[1] + square[3]) / 2
    inside = np.flatnonzero((boxes[:, 0] <= cx) & (cx < boxes[:, 2]) & (boxes[:, 1] <= cy) & (cy < boxes[:, 3]))
    assert len(inside) == 1
    patches = inputs.tensors["pixel_values"]  # (tokens * 4, C*T*14*14), 4 patches per merged token
    darkness = patches.reshape(-1, 4, patches.shape[-1]).mean(dim=(1, 2))
    assert int(darkness.argmin()) == int(inside[0])


def test_inputs_carry_mm_token_type_ids_and_image_tokens_get_2d_positions(tiny_adapter):
    page = Image.new("RGB", (300, 200), "white")
    inputs = tiny_adapter.image_inputs([page], "What is the pass key?")
    types = inputs.tensors["mm_token_type_ids"]
    image_id = tiny_adapter.model.config.image_token_id
    assert torch.equal(types.bool(), inputs.input_ids == image_id)
    positions, _ = tiny_adapter.model.model.get_rope_index(
        inputs.input_ids, mm_token_type_ids=types, image_grid_thw=inputs.tensors["image_grid_thw"])
    span = inputs.image_tokens[0].positions
    height_ids, width_ids = positions[1, 0, span.start : span.stop], positions[2, 0, span.start : span.stop]
    cols = int(inputs.tensors["image_grid_thw"][0, 2]) // 2
    assert len(set(height_ids.tolist())) > 1 and len(set(width_ids.tolist())) == cols
    with torch.no_grad():
        with_types = tiny_adapter.model(**inputs.tensors).logits
        without = {k: v for k, v in inputs.tensors.items() if k != "mm_token_type_ids"}
        with pytest.raises(ValueError, match="mm_token_type_ids"):
            tiny_adapter.model(**without)
    assert torch.isfinite(with_types).all()


def test_tiny_model_loads_from_disk_and_generates_from_pages(tiny_model_dir, tiny_adapter):
    assert (tiny_model_dir / "config.json").is_file() and (tiny_model_dir / "tokenizer.json").is_file()
    shape = tiny_adapter.shape
    assert (shape.num_layers, shape.num_heads, shape.num_kv_heads, shape.head_dim) == (3, 4, 2, 16)
    pages = [Image.new("RGB", (400, 300), "white"), Image.new("RGB", (400, 300), "white")]
    generated = tiny_adapter.generate(tiny_adapter.image_inputs(pages, "What is the pass key?"), max_new_tokens=5)
    assert len(generated) == 5
    assert tiny_adapter.tokenizer.convert_tokens_to_ids("7") != tiny_adapter.tokenizer.unk_token_id


def test_tiny_builder_is_deterministic(tmp_path):
    from safetensors.torch import load_file

    from ocr_heads.models.tiny.build import build_tiny_qwen2_vl

    a = load_file(build_tiny_qwen2_vl(tmp_path / "a", seed=3) / "model.safetensors")
    b = load_file(build_tiny_qwen2_vl(tmp_path / "b", seed=3) / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_text_inputs_map_context_characters_to_tokens(tiny_adapter):
    context = "hay hay. The pass key is 123. more hay"
    inputs = tiny_adapter.text_inputs(context, "What is the pass key?")
    start = context.index("123")
    positions = inputs.context_tokens(start, start + 3)
    ids = inputs.input_ids[0]
    assert tiny_adapter.tokenizer.decode(ids[positions]) == "123"


def test_unknown_models_give_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="without config.json"):
        load_adapter(str(tmp_path))
    with pytest.raises(ValueError, match="unknown model"):
        model_type(str(tmp_path / "no-such-dir"))
    # Tests run offline: a hub id with no cached copy says the hub is unreachable (not "unknown").
    with pytest.raises(UserError, match="the Hugging Face hub is unreachable"):
        model_type("no-such-org/no-such-model-xyz")
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ValueError, match="not supported"):
        load_adapter(str(tmp_path))


def test_char_tokenizer_keeps_every_character_a_token():
    from ocr_heads.models.tiny.charset import build_char_tokenizer

    tokenizer = build_char_tokenizer()
    text = "Key:\n\n48 213"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text) and tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids) == text
