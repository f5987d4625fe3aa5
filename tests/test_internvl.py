"""The InternVL family: adapter geometry against the real image processor, the tiny model end to end
(step1 -> step2 image/text -> step3), capture == eager, interventions, and the InternVL2 weight conversion."""

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import step3_extracted_heads
from ocr_heads.attention import capture, text_attention, verify_against_eager
from ocr_heads.data import step1
from ocr_heads.data.samples import load_samples
from ocr_heads.interventions import mask_heads, redistribute_sink_heads
from ocr_heads.models import load_adapter, model_type
from ocr_heads.models.internvl import InternVLAdapter, page_token_boxes, tile_layout
from ocr_heads.models.tiny import IMAGENET_MEAN, IMAGENET_STD
from ocr_heads.step2 import main as step2_main

# (page size, max_patches) -> expected (cols, rows): from the processor's aspect-ratio rule, worked by hand.
LAYOUTS = [
    ((635, 482), 6, (3, 2)),  # a rendered step1 page: 6 tiles + thumbnail
    ((635, 482), 12, (4, 3)),
    ((300, 900), 6, (1, 3)),
    ((1200, 400), 6, (3, 1)),
    ((448, 448), 6, (1, 1)),  # one tile: no thumbnail
    ((56, 56), 6, (1, 1)),
    ((635, 482), 1, (1, 1)),  # tiling off
]


@pytest.fixture(scope="module")
def internvl_dir(tmp_path_factory):
    from ocr_heads.models.tiny import main as tiny_main

    out = tmp_path_factory.mktemp("models") / "tiny-internvl"
    tiny_main(["--family", "internvl", "--out", str(out)])  # the acceptance command, in-process
    return out


@pytest.fixture(scope="module")
def adapter(internvl_dir):
    return load_adapter(str(internvl_dir))


def token_intensity_from_pixels(pixel_values: torch.Tensor, grid: int) -> np.ndarray:
    """Per LLM token, in prompt order (tiles in order, each row-major), the mean intensity of its pixel block."""
    tiles = pixel_values[:, 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]  # undo the normalisation: 0 black .. 1 white
    cell = tiles.shape[-1] // grid
    return tiles.reshape(len(tiles), grid, cell, grid, cell).mean(dim=(2, 4)).reshape(-1).numpy()


def token_intensity_from_page(page: Image.Image, boxes: np.ndarray) -> np.ndarray:
    """Per box on the original page, the mean intensity of the page pixels whose centres fall inside it."""
    pixels = np.asarray(page.convert("L"), dtype=np.float64) / 255
    first = np.ceil(boxes - 0.5).astype(int)  # pixel i (centre i + 0.5) is inside [x0, x1) when x0 <= i + 0.5 < x1
    return np.array([pixels[y0:y1, x0:x1].mean() for x0, y0, x1, y1 in first])


@pytest.mark.parametrize(("size", "max_patches", "layout"), LAYOUTS)
def test_token_boxes_follow_the_processor_tiles(adapter, size, max_patches, layout):
    adapter.max_patches = max_patches
    try:
        page = Image.new("RGB", size, "white")
        inputs = adapter.image_inputs([page, page], "q?")
        assert tile_layout(size, 448, 1, max_patches) == layout
        cols, rows = layout
        tiles = cols * rows + (cols * rows > 1)
        # The processor made exactly that many 448x448 tiles per page, in the prompt order we assume.
        assert inputs.tensors["pixel_values"].shape == (2 * tiles, 3, 448, 448)
        ids = inputs.input_ids[0]
        assert int((ids == adapter.model.config.image_token_id).sum()) == 2 * tiles * 256
        for tokens in inputs.image_tokens:
            assert tokens.count == tiles * 256
            boxes = tokens.tile_boxes
            assert ids[tokens.start - 1] == adapter.tokenizer.convert_tokens_to_ids("<img>")
            assert ids[tokens.start + tokens.count] == adapter.tokenizer.convert_tokens_to_ids("</img>")
            # Local tiles partition the page into (16 cols) x (16 rows) cells, row-major inside each tile.
            local = boxes[: cols * rows * 256]
            np.testing.assert_allclose(local[1, 0] - local[0, 0], size[0] / cols / 16)
            np.testing.assert_allclose(local[16, 1] - local[0, 1], size[1] / rows / 16)
            area = ((local[:, 2] - local[:, 0]) * (local[:, 3] - local[:, 1])).sum()
            np.testing.assert_allclose(area, size[0] * size[1])
            np.testing.assert_allclose(local.min(axis=0)[:2], 0, atol=1e-9)
            np.testing.assert_allclose(local.max(axis=0)[2:], size)
            if tiles > 1:  # the thumbnail: one 16x16 grid over the whole page
                np.testing.assert_allclose(boxes[-256:], page_token_boxes(size, 1, 1, 16))
        assert inputs.image_tokens[1].start > inputs.image_tokens[0].start + inputs.image_tokens[0].count
    finally:
        adapter.max_patches = 6


@pytest.mark.parametrize("size", [(635, 482), (300, 900), (1200, 400)])
def test_every_token_box_shows_what_the_processor_tile_shows(adapter, size):
    """Per token, the page inside its box and the processor's pixels for that token agree (tiles + thumbnail)."""
    rng = np.random.default_rng(0)
    page = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(page)
    for _ in range(40):
        x, y = rng.integers(0, size[0]), rng.integers(0, size[1])
        w, h = rng.integers(20, 90, size=2)
        draw.rectangle((int(x), int(y), int(x + w), int(y + h)), fill="black")
    inputs = adapter.image_inputs([page], "q?")
    boxes = inputs.image_tokens[0].tile_boxes
    ours = token_intensity_from_page(page, boxes)
    processor = token_intensity_from_pixels(inputs.tensors["pixel_values"], adapter.grid)
    assert len(ours) == len(processor) == inputs.image_tokens[0].count
    assert np.corrcoef(ours, processor)[0, 1] > 0.97
    assert np.abs(ours - processor).mean() < 0.03
    # A wrong layout is caught: the same boxes with the tiles' order reversed disagree.
    flipped = np.concatenate([boxes[:-256].reshape(-1, 256, 4)[::-1].reshape(-1, 4), boxes[-256:]])
    assert np.corrcoef(token_intensity_from_page(page, flipped), processor)[0, 1] < 0.9


def test_pixel_shuffle_keeps_tokens_row_major_over_28px_blocks(adapter):
    """LLM token k of a tile holds the 2x2 patches of block (k // 16, k % 16), as the boxes assume."""
    rows, cols = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    features = torch.stack([rows, cols], dim=-1)[None]  # (1, 32, 32, 2): each patch knows its row and column
    shuffled = adapter.model.model.pixel_shuffle(features, scale_factor=0.5).reshape(256, 4, 2)
    k = torch.arange(256)
    assert torch.equal(shuffled[:, :, 0].min(dim=1).values, 2.0 * (k // 16))
    assert torch.equal(shuffled[:, :, 1].min(dim=1).values, 2.0 * (k % 16))
    assert torch.equal(shuffled.max(dim=1).values - shuffled.min(dim=1).values, torch.ones(256, 2))


def test_tiny_internvl_loads_and_generates(internvl_dir, adapter):
    assert model_type(str(internvl_dir)) == "internvl"
    assert isinstance(adapter, InternVLAdapter)
    assert json.loads((internvl_dir / "config.json").read_text())["ocr_heads_random_weights"] is True
    shape = adapter.shape
    assert (shape.num_layers, shape.num_heads, shape.num_kv_heads, shape.head_dim) == (3, 4, 2, 16)
    assert len(adapter.attention_modules()) == 3
    pages = [Image.new("RGB", (400, 300), "white")]
    assert len(adapter.generate(adapter.image_inputs(pages, "What is the pass key?"), max_new_tokens=4)) == 4
    context = "hay hay. The pass key is 123. more hay"
    inputs = adapter.text_inputs(context, "What is the pass key?")
    start = context.index("123")
    assert adapter.tokenizer.decode(inputs.input_ids[0][inputs.context_tokens(start, start + 3)]) == "123"
    with pytest.raises(ValueError, match="max_patches"):
        InternVLAdapter(str(internvl_dir), min_pixels=100)


def test_tiny_builder_is_deterministic(tmp_path):
    from safetensors.torch import load_file

    from ocr_heads.models.tiny import build_tiny_internvl

    a = load_file(build_tiny_internvl(tmp_path / "a", seed=3) / "model.safetensors")
    b = load_file(build_tiny_internvl(tmp_path / "b", seed=3) / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_capture_is_scoped_to_the_language_model_and_equals_eager(adapter, passkey_dir):
    config = adapter.model.config
    for modality in ("image", "text"):
        sample = load_samples(passkey_dir)[0]
        if modality == "image":
            inputs = adapter.image_inputs(sample.load_pages(), sample.question)
        else:
            inputs = adapter.text_inputs(sample.context, sample.question)
        plain = adapter.generate(inputs, max_new_tokens=5)
        with capture(adapter) as recorder:
            assert config.vision_config._attn_implementation == "sdpa"
            assert config.text_config._attn_implementation == "ocr_heads"
            generated = adapter.generate(inputs, max_new_tokens=5)
        assert generated == plain
        record = recorder.result()
        assert record.argmax.shape == (5, 3, 4)
        assert verify_against_eager(adapter, inputs, generated, record) == []
    assert config.text_config._attn_implementation == "sdpa"
    with text_attention(adapter, "eager"):
        assert config.vision_config._attn_implementation == "sdpa"


def test_interventions_run_and_restore(adapter, passkey_dir):
    sample = load_samples(passkey_dir)[0]
    inputs = adapter.image_inputs(sample.load_pages(), sample.question)
    with torch.no_grad():
        plain = adapter.model(**inputs.tensors).logits
        with mask_heads(adapter, ["l0_h0", "l2_h3"]):
            masked = adapter.model(**inputs.tensors).logits
        with redistribute_sink_heads(adapter, ["l1_h1"], beta=0.4):
            sunk = adapter.model(**inputs.tensors).logits
        again = adapter.model(**inputs.tensors).logits
    assert not torch.allclose(plain, masked) and not torch.allclose(plain, sunk)
    assert torch.equal(plain, again)


def test_step1_to_step3_on_tiny_internvl(internvl_dir, tmp_path):
    data = tmp_path / "data"
    parser = step1.build_parser("passkey", "test")
    step1.run("passkey", parser.parse_args(["--out", str(data), "--n", "2", "--lengths", "200"]))
    heads = [f"l{layer}_h{head}" for layer in range(3) for head in range(4)]
    for kind, suffix in (("image", "fg"), ("text", "te")):
        argv = ["--model_id", str(internvl_dir), "--data", str(data), "--out", str(tmp_path / "scores"),
                "--max_new_tokens", "4"]
        assert step2_main(kind, argv) == 0
        score_file = tmp_path / "scores" / kind / f"tiny-internvl_{suffix}.json"
        scores = json.loads(score_file.read_text())
        assert list(scores) == heads  # exactly layers x heads keys of the config
        meta = json.loads(score_file.with_name(f"tiny-internvl_{suffix}.meta.json").read_text())
        assert meta["n_samples"] == 2 and meta["n_failed"] == 0 and "noise" in meta["warning"]
        out = tmp_path / f"heads_{suffix}.json"
        assert step3_extracted_heads.main(["--scores", str(score_file), "--min_score", "0", "--min_frequency", "0",
                                           "--out", str(out)]) == 0
        assert {h["head"] for h in json.loads(out.read_text())["heads"]} <= set(heads)
