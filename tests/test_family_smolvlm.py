"""SmolVLM / Idefics3: tiles + global image against the real processor's ids and pixels (pixel shuffle, 64 tokens a
512 px tile), no padded frames, both protocols, Idefics3 dispatch, batching across frame counts, and the battery."""

import json

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
from transformers import Idefics3ForConditionalGeneration, Idefics3Processor, SmolVLMForConditionalGeneration

from ocr_heads.models import load_adapter
from ocr_heads.models.smolvlm import Idefics3Adapter, SmolVLMAdapter

# Pages of several shapes: landscape, portrait, very wide (1 x 4 crops), tiny (upscaled), square.
SIZES = [STEP1_PAGE, (300, 900), (2000, 300), (40, 30), (500, 500)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_family(tmp_path_factory, "smolvlm")  # the acceptance command


@pytest.fixture(scope="module")
def adapter(model_dir):
    return load_adapter(str(model_dir), protocol="native")


@pytest.fixture(scope="module")
def paper_adapter(model_dir):
    return load_adapter(str(model_dir))


def processor_inputs(adapter, pages: list[Image.Image], question: str):
    """What transformers' own Idefics3Processor (SmolVLM's prompt layout; it needs no video processor) makes of the
    chat prompt and the pages, with the adapter's image processor and tokenizer."""
    processor = Idefics3Processor(image_processor=adapter.image_processor, tokenizer=adapter.tokenizer,
                                  image_seq_len=adapter.tokens_per_image)
    prompt = adapter.tokenizer.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"} for _ in pages] + [{"type": "text", "text": question}]}],
        tokenize=False, add_generation_prompt=True)
    return processor(text=[prompt], images=[pages], return_tensors="pt", add_special_tokens=False,
                     do_image_splitting=adapter.image_splitting)


def processor_intensity(pixel_values: torch.Tensor, grid: int) -> np.ndarray:
    """Per LLM token (frames in order, each a row-major grid x grid), the mean intensity of its pixel-shuffled block."""
    # (frames, H, W); undo the normalisation: 0 black .. 1 white
    return block_means(pixel_values[:, 0, 0] * 0.5 + 0.5, grid)


def transposed(runs) -> np.ndarray:
    return np.concatenate([run.tile_boxes.reshape(8, 8, 4).transpose(1, 0, 2).reshape(-1, 4) for run in runs])


@pytest.mark.parametrize("splitting", [True, False])
@pytest.mark.parametrize("size", SIZES)
def test_tokens_show_what_the_processor_pixels_show(adapter, size, splitting):
    adapter.image_splitting = splitting
    try:
        page = page_with_squares(size)
        inputs = adapter.image_inputs([page, page], "q?")
        reference = processor_inputs(adapter, [page, page], "q?")
        expected = adapter.expected_tokens(size)
    finally:
        adapter.image_splitting = True
    # The ids and pixels transformers' processor makes; the model's own features fill exactly the image tokens.
    assert torch.equal(inputs.input_ids, reference["input_ids"])
    assert torch.equal(inputs.tensors["pixel_values"][:, 0], reference["pixel_values"][0])
    assert bool(reference["pixel_attention_mask"].all())  # no frame is padded
    runs = inputs.image_tokens
    frames = inputs.tensors["pixel_values"].shape[0]
    assert len(runs) == frames and all(run.count == 64 for run in runs)
    assert [run.page for run in runs] == [0] * (frames // 2) + [1] * (frames // 2)
    ids = inputs.input_ids[0]
    assert int((ids == adapter.image_token_id).sum()) == 64 * frames == 2 * expected
    with torch.no_grad():
        features = adapter.model.model.get_image_features(pixel_values=inputs.tensors["pixel_values"])
    assert sum(len(f) for f in features.pooler_output) == 64 * frames
    shown = processor_intensity(inputs.tensors["pixel_values"], adapter.grid)
    boxes = np.concatenate([run.tile_boxes for run in runs])
    ours = page_intensity(page, boxes)
    assert np.corrcoef(ours, shown)[0, 1] > 0.95 and np.abs(ours - shown).mean() < 0.05
    # The crops of a page partition it exactly, and so does its global image.
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    page_frames = frames // 2
    np.testing.assert_allclose(area[: 64 * page_frames].sum(), size[0] * size[1] * (1 + (page_frames > 1)))
    np.testing.assert_allclose(area[64 * (page_frames - 1) : 64 * page_frames].sum(), size[0] * size[1])
    # A deliberately wrong order (each tile's grid transposed) disagrees.
    assert np.corrcoef(page_intensity(page, transposed(runs)), shown)[0, 1] < 0.8


def test_black_square_lands_in_the_tokens_that_show_it(adapter):
    page = Image.new("RGB", STEP1_PAGE, "white")
    square = (480, 40, 600, 140)  # top right: off the diagonal, so a transposed grid misses it
    ImageDraw.Draw(page).rectangle(square, fill="black")
    inputs = adapter.image_inputs([page], "q?")
    assert len(inputs.image_tokens) == 17  # 4 x 4 crops + the global image
    boxes = np.concatenate([run.tile_boxes for run in inputs.image_tokens])
    shown = processor_intensity(inputs.tensors["pixel_values"], adapter.grid)

    def inside(b):
        return np.flatnonzero((b[:, 0] >= square[0]) & (b[:, 1] >= square[1]) & (b[:, 2] <= square[2])
                              & (b[:, 3] <= square[3]))

    assert inside(boxes).size >= 12 and shown[inside(boxes)].max() < 0.2
    # Wrong orders: the crops taken column-major (the square's crop, row 1 col 4, swaps with row 4 col 1).
    crops_by_column = boxes[: 16 * 64].reshape(4, 4, 64, 4).transpose(1, 0, 2, 3).reshape(-1, 4)
    assert shown[inside(crops_by_column)].min() > 0.5


def test_crop_boxes_follow_the_processor_grid(adapter):
    """635 x 482 -> longest edge 2048 (2048 x 1554) -> multiples of 512 (2048 x 2048): 4 x 4 crops of 158.75 x 120.5
    page px, 8 x 8 tokens each; then the global image: 8 x 8 tokens of 79.375 x 60.25 px."""
    inputs = adapter.image_inputs([Image.new("RGB", STEP1_PAGE, "white")], "q?")
    runs = inputs.image_tokens
    np.testing.assert_allclose(runs[0].tile_boxes[0], [0, 0, 635 / 32, 482 / 32])
    np.testing.assert_allclose(runs[5].tile_boxes[0], [158.75, 120.5, 158.75 + 635 / 32, 120.5 + 482 / 32])
    np.testing.assert_allclose(runs[16].tile_boxes[-1], [635 * 7 / 8, 482 * 7 / 8, 635, 482])
    ids = inputs.input_ids[0].tolist()
    tokenizer = adapter.tokenizer
    assert tokenizer.convert_ids_to_tokens(ids[runs[5].start - 2 : runs[5].start]) == [
        "<fake_token_around_image>", "<row_2_col_2>"]
    assert tokenizer.convert_ids_to_tokens(ids[runs[16].start - 3 : runs[16].start]) == [
        "\n", "<fake_token_around_image>", "<global-img>"]
    assert runs[0].layout == "4 x 4 tiles (rows x cols, row-major) of 512 px, 8 x 8 tokens each, over page cells of " \
        "158.8 x 120.5 px"
    assert runs[5].layout == ""
    assert runs[16].layout == "then 8 x 8 tokens over the page stretched to 512 px (global image)"


def test_a_character_is_targeted_in_its_tile_and_in_the_global_image(adapter):
    """A character box (x 100..110, y 100..115) lies in tile row 1 col 1 (x 0..158.75, y 0..120.5): its tokens there
    (19.84 x 15.06 px: column 5, rows 6-7) and in the global image (79.4 x 60.25 px: column 1, row 1) are targets."""
    from ocr_heads.scores.rules import char_targets

    inputs = adapter.image_inputs([Image.new("RGB", STEP1_PAGE, "white")], "q?")
    (targets,) = char_targets([{0: [[100, 100, 110, 115]]}], inputs.image_tokens)
    runs = inputs.image_tokens
    in_run = {k: sorted(t - run.start for t in targets if run.start <= t < run.start + run.count)
              for k, run in enumerate(runs)}
    assert {k: v for k, v in in_run.items() if v} == {0: [6 * 8 + 5, 7 * 8 + 5], 16: [1 * 8 + 1]}


@pytest.mark.parametrize("size", [*SIZES, (512, 512), (513, 100), (100, 5000), (4000, 4000), (1, 1)])
def test_expected_tokens_match_the_processor(model_dir, size):
    """expected_tokens (the settings' arithmetic) against the frames the processor makes; paper: one tile."""
    native = load_adapter(str(model_dir), protocol="native", weights=False)
    vision = native.image_processor(images=[[Image.new("RGB", size, "white")]], return_row_col_info=True,
                                    return_tensors="pt")
    assert native.expected_tokens(size) == 64 * vision["pixel_values"].shape[1]
    assert bool(vision["pixel_attention_mask"].all())  # every frame a full tile
    assert load_adapter(str(model_dir), weights=False).expected_tokens(size) == 64


def test_a_padded_frame_is_refused(adapter):
    frames = torch.zeros(1, 3, 512, 512)
    mask = torch.ones(1, 512, 512, dtype=torch.long)
    adapter._check_frames(frames, mask, 1)
    mask[0, 300:] = 0
    with pytest.raises(ValueError, match="padded"):
        adapter._check_frames(frames, mask, 1)


def test_paper_is_the_global_image_native_splits(model_dir):
    paper = load_adapter(str(model_dir), weights=False)
    native = load_adapter(str(model_dir), protocol="native", weights=False)
    assert paper.settings() == {"protocol": "paper", "image_splitting": False, "tile": 512, "tokens_per_image": 64}
    assert native.settings() == {"protocol": "native", "image_splitting": True, "tile": 512, "tokens_per_image": 64,
                                 "longest_edge": 2048}
    page = Image.new("RGB", STEP1_PAGE, "white")
    (only,) = paper.image_inputs([page], "q?").image_tokens
    np.testing.assert_allclose(only.tile_boxes[[0, -1]],
                               [[0, 0, 635 / 8, 482 / 8], [635 * 7 / 8, 482 * 7 / 8, 635, 482]])
    assert [t.count for t in native.image_inputs([page], "q?").image_tokens] == [64] * 17
    assert load_adapter(str(model_dir), image_splitting=True, weights=False).expected_tokens(STEP1_PAGE) == 17 * 64
    with pytest.raises(ValueError, match="max_patches"):
        SmolVLMAdapter(str(model_dir), max_patches=2, weights=False)


def test_generation_uses_the_cache_despite_the_published_use_cache_false(model_dir, adapter):
    """The published config says use_cache: false (kept in the tiny model); the adapter's generate turns the cache
    on, so every decode step is one query row."""
    assert json.loads((model_dir / "config.json").read_text())["use_cache"] is False
    rows = []
    hook = adapter.attention_modules()[0].register_forward_pre_hook(
        lambda module, args, kwargs: rows.append(kwargs["hidden_states"].shape[1]), with_kwargs=True)
    try:
        inputs = adapter.image_inputs([Image.new("RGB", STEP1_PAGE, "white")], "q?")
        adapter.generate(inputs, max_new_tokens=4)
    finally:
        hook.remove()
    assert rows[0] == inputs.prompt_length and set(rows[1:]) == {1}


def test_batches_of_different_frame_counts_equal_single_runs(adapter):
    """Frames are stored one per row, so collate concatenates a 17-frame and a 5-frame prompt; batched greedy
    decoding gives each sample what it gets alone."""
    a = adapter.image_inputs([page_with_squares(STEP1_PAGE)], "What is the pass key?")
    b = adapter.image_inputs([page_with_squares((2000, 300), seed=1)], "q?")
    assert (a.tensors["pixel_values"].shape[0], b.tensors["pixel_values"].shape[0]) == (17, 5)
    assert adapter.generate_batch([a, b], max_new_tokens=3) == [adapter.generate(a, 3), adapter.generate(b, 3)]


def test_idefics3_checkpoints_dispatch_to_the_same_adapter(tmp_path, passkey_dir):
    """An idefics3 config (the SmolVLM v1 releases) loads as Idefics3ForConditionalGeneration through the same
    adapter; its capture equals eager attention."""
    from ocr_heads.models.tiny.smolvlm import build_tiny_idefics3

    model_dir = build_tiny_idefics3(tmp_path / "tiny-idefics3")
    assert json.loads((model_dir / "config.json").read_text())["model_type"] == "idefics3"
    adapter = load_adapter(str(model_dir))
    assert type(adapter) is Idefics3Adapter and type(adapter.model) is Idefics3ForConditionalGeneration
    check_capture_equals_eager(adapter, passkey_dir, steps=3)


# ---------------------------------------------------------------- the battery


def test_model_class(adapter):
    assert type(adapter.model) is SmolVLMForConditionalGeneration and len(adapter.attention_modules()) == 3


def test_capture_equals_eager(adapter, passkey_dir):
    """Native: 17 frames a page, prompts of about 1200 tokens (2400 with two pages)."""
    check_capture_equals_eager(adapter, passkey_dir)


def test_masking_equals_o_proj_hook(paper_adapter, passkey_dir):
    check_masking_equals_o_proj_hook(paper_adapter, passkey_dir, [(1, 2), (2, 0)])


def test_sink_equals_eager_reference(paper_adapter, passkey_dir):
    """Paper protocol (one tile a page): the reference edits every row in Python, and native prompts are 10x longer."""
    check_sink_equals_eager_reference(paper_adapter, passkey_dir, {0: [1], 2: [3, 0]})


def test_step1_to_step3(model_dir, tmp_path):
    """The command lines at their default protocol (paper: one tile a page); the checks above run native."""
    check_step1_to_step3(model_dir, tmp_path, num_layers=3, num_heads=4)


def test_step2_records_tokens_per_page_not_per_tile(model_dir, tmp_path, passkey_dir, adapter):
    """Native: a page is 17 runs (16 tiles + the global image); the per-sample log and the meta sidecar count
    tokens per page (summed over its runs), as inputs.tokens_per_page does."""
    from ocr_heads.data.samples import load_samples
    from ocr_heads.pipeline.step2 import main as step2_main

    sample = load_samples(passkey_dir)[0]
    pages = sample.load_pages()
    expected = [adapter.expected_tokens(page.size) for page in pages]
    assert adapter.image_inputs(pages, sample.question).tokens_per_page == expected
    argv = ["--model_id", str(model_dir), "--data", str(passkey_dir), "--out", str(tmp_path), "--n", "1",
            "--max_new_tokens", "2", "--protocol", "native"]
    assert step2_main("image", argv) == 0
    stem = tmp_path / "image" / f"{model_dir.name}_fg"
    (record,) = [json.loads(line) for line in stem.with_suffix(".samples.jsonl").read_text().splitlines()]
    assert record["image_tokens"] == expected
    meta = json.loads(stem.with_suffix(".meta.json").read_text())
    assert meta["image_tokens_per_page"]["pages"] == len(pages)
