"""The later Qwen families (Qwen2.5-VL, Qwen3-VL, Qwen3-VL-MoE, hybrid Qwen3.5) on tiny models built from their
published hub configs: the token layout against the processors' own code, tile geometry against the processor's pixels,
capture == eager, masking and sink redistribution against hand-written references, and step1 -> step2 -> step3
end to end (with Qwen3.5's linear-attention layers marked not scoreable)."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from family_battery import build_tiny_family
from PIL import Image, ImageDraw

# The same module object pytest collects (tests/ is on sys.path): its eager sink reference is registered once
# under one name, with one set of globals (importing it as tests.test_interventions would register a second copy).
from test_interventions import (
    full_sequence_inputs,
    greedy_with_scores,
    logits,
    o_proj_zeroing_hooks,
    prompt_inputs,
    reference_logits,
)
from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize
from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor

import step3_extracted_heads
from ocr_heads.attention import NOT_RECORDED, capture, text_attention, verify_against_eager
from ocr_heads.attention.edits import mask_heads, redistribute_sink_heads
from ocr_heads.attention.probes import PromptRowArgmax
from ocr_heads.data.samples import load_samples
from ocr_heads.models import load_adapter, model_type
from ocr_heads.models.qwen2_vl import IMAGE_PAD
from ocr_heads.models.tiny.hub_configs import HUB_CONFIGS
from ocr_heads.pipeline import step1
from ocr_heads.pipeline.step2 import main as step2_main
from ocr_heads.report import build_report
from ocr_heads.scores.files import load_scores

# family -> what the published config fixes: processor class (as the published preprocessor_config names it),
# px per LLM token, decoder layers of the tiny model, layers with softmax attention, the prompt of one user turn.
FAMILIES = {
    "qwen2_5_vl": SimpleNamespace(
        processor=Qwen2_5_VLProcessor, tile=28, layers=3, attention=[0, 1, 2],
        prompt="<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
               "<|vision_start|><|image_pad|><|vision_end|>q?<|im_end|>\n<|im_start|>assistant\n"),
    "qwen3_vl": SimpleNamespace(
        processor=Qwen3VLProcessor, tile=32, layers=3, attention=[0, 1, 2],
        prompt="<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>q?<|im_end|>\n<|im_start|>assistant\n"),
    "qwen3_vl_moe": SimpleNamespace(
        processor=Qwen3VLProcessor, tile=32, layers=3, attention=[0, 1, 2],
        prompt="<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>q?<|im_end|>\n<|im_start|>assistant\n"),
    "qwen3_5": SimpleNamespace(
        processor=Qwen3VLProcessor, tile=32, layers=8, attention=[3, 7],
        prompt="<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>q?<|im_end|>\n<|im_start|>assistant\n"
               "<think>\n\n</think>\n\n"),
}
PAGE_SIZES = [(635, 482), (300, 900), (1200, 400), (40, 40)]
# (rows, cols) of each page (and its transpose, cols x rows) under the paper's min = max = 256 t^2 pixels, by hand
# with smart_resize's rule: round each side to a multiple of t; if the area is above the budget, scale by
# beta = sqrt(area / budget) and floor, if below, scale by sqrt(budget / area) and ceil. E.g. t = 32, 300 x 900:
# 896 x 288 = 258048 < 262144, so beta = 0.98534: ceil(900 * beta / 32) = 28 rows, ceil(300 * beta / 32) = 10
# columns (280 tokens: the upscaling branch rounds up). t = 28, 635 x 482: 476 x 644 > 200704, beta = 1.2353:
# floor(482 / beta / 28) = 13 rows, floor(635 / beta / 28) = 18 columns.
PAPER_GRID = {28: {(635, 482): (13, 18), (300, 900): (27, 9), (1200, 400): (9, 27), (40, 40): (16, 16)},
              32: {(635, 482): (13, 18), (300, 900): (28, 10), (1200, 400): (9, 27), (40, 40): (16, 16)}}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory):
    """(name, model dir, adapter), the model built by the acceptance command, in-process."""
    out = build_tiny_family(tmp_path_factory, request.param)
    return request.param, out, load_adapter(str(out))


def expected_ids(adapter, name, pages, question):
    """input_ids as the family's processor builds them: its own replace_image_token on each placeholder."""
    spec = FAMILIES[name]
    content = [{"type": "image"} for _ in pages] + [{"type": "text", "text": question}]
    prompt = adapter.tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                                   add_generation_prompt=True, **adapter.chat_template_kwargs)
    grids = adapter.image_processor(images=pages, return_tensors="pt")["image_grid_thw"]
    processor_self = SimpleNamespace(image_processor=adapter.image_processor, image_token=IMAGE_PAD)
    pieces = prompt.split(IMAGE_PAD)
    text = pieces[0] + "".join(spec.processor.replace_image_token(processor_self, {"image_grid_thw": grids}, i)
                               + piece for i, piece in enumerate(pieces[1:]))
    return adapter.tokenizer(text, add_special_tokens=False)["input_ids"]


def test_tiny_model_is_the_published_architecture_shrunk(family):
    name, out, adapter = family
    spec = FAMILIES[name]
    config = json.loads((out / "config.json").read_text())
    assert model_type(str(out)) == name and config["ocr_heads_random_weights"] is True
    vision = config["vision_config"]
    assert vision["patch_size"] * vision["spatial_merge_size"] == spec.tile == adapter.tile_size
    assert adapter.shape.num_layers == spec.layers and adapter.scoreable_layers == spec.attention
    assert adapter.shape.num_heads == 4 and adapter.shape.num_kv_heads == 2
    if name == "qwen3_5":  # the published pattern: every 4th layer is full attention
        assert config["text_config"]["layer_types"] == ["linear_attention"] * 3 + ["full_attention"] + \
            ["linear_attention"] * 3 + ["full_attention"]
        modules = adapter.attention_modules()
        assert [m is None for m in modules] == [True, True, True, False, True, True, True, False]
    if name.startswith("qwen3_vl"):
        assert vision["deepstack_visual_indexes"] == [0, 1]
        # DeepStack is live: two extra feature maps, one row per image token, to add after decoder layers 0 and 1.
        inputs = adapter.image_inputs([Image.new("RGB", (300, 200), "white")], "q?")
        with torch.no_grad():
            features = adapter.model.model.get_image_features(inputs.tensors["pixel_values"],
                                                              inputs.tensors["image_grid_thw"])
        count = inputs.image_tokens[0].count
        assert [level[0].shape for level in features.deepstack_features] == [(count, 64)] * 2
    if name == "qwen3_vl_moe":
        text = adapter.model.config.text_config  # saved as num_local_experts (attribute_map)
        assert text.num_experts == 4 and text.num_experts_per_tok == 2
    if name == "qwen2_5_vl":
        assert vision["fullatt_block_indexes"] == [1] and vision["window_size"] == 112
    processor = json.loads((out / "preprocessor_config.json").read_text())
    published = {"qwen2_5_vl": "Qwen2.5-VL-7B-Instruct", "qwen3_vl": "Qwen3-VL-4B-Instruct",
                 "qwen3_vl_moe": "Qwen3-VL-30B-A3B-Instruct", "qwen3_5": "Qwen3.5-0.8B"}[name]
    assert processor == json.loads((HUB_CONFIGS / published / "preprocessor_config.json").read_text())
    assert processor["patch_size"] == vision["patch_size"]
    # The paper's budget is what the processor applies, even where the published file's top-level
    # min_pixels/max_pixels (Qwen2.5-VL) would override a `size` argument.
    size = adapter.image_processor.size
    assert (size["shortest_edge"], size["longest_edge"]) == (256 * spec.tile**2, 256 * spec.tile**2)
    assert adapter.settings() == {"protocol": "paper", "min_pixels": 256 * spec.tile**2,
                                  "max_pixels": 256 * spec.tile**2}
    prompt = adapter.tokenizer.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "q?"}]}], tokenize=False,
        add_generation_prompt=True, **adapter.chat_template_kwargs)
    assert prompt == spec.prompt
    for token in ("<|vision_start|>", "<|vision_end|>", IMAGE_PAD, "<|im_end|>"):
        assert len(adapter.tokenizer(token, add_special_tokens=False)["input_ids"]) == 1
    # A random model must not emit image placeholders (a re-run of prompt + output would count them as images).
    assert adapter.model.config.image_token_id in adapter.model.generation_config.suppress_tokens


@pytest.mark.parametrize("size", PAGE_SIZES)
def test_image_tokens_match_the_processor_and_tiles_partition_each_grid(family, size):
    name, _, adapter = family
    tile = FAMILIES[name].tile
    page, other = Image.new("RGB", size, "white"), Image.new("RGB", (size[1], size[0]), "white")
    inputs = adapter.image_inputs([page, other], "q?")
    ids = inputs.input_ids[0]
    assert ids.tolist() == expected_ids(adapter, name, [page, other], "q?")
    image_id = adapter.model.config.image_token_id
    assert int((ids == image_id).sum()) == sum(t.count for t in inputs.image_tokens)
    assert torch.equal(inputs.tensors["mm_token_type_ids"][0].bool(), ids == image_id)
    grids = inputs.tensors["image_grid_thw"].tolist()
    for tokens, image, grid in zip(inputs.image_tokens, (page, other), grids, strict=True):
        width, height = image.size
        resized_h, resized_w = smart_resize(height, width, factor=tile, min_pixels=256 * tile**2,
                                            max_pixels=256 * tile**2)
        rows, cols = resized_h // tile, resized_w // tile
        hand = PAPER_GRID[tile][size]
        assert (rows, cols) == (hand if image is page else hand[::-1])
        assert grid == [1, 2 * rows, 2 * cols] and tokens.count == rows * cols == adapter.expected_tokens(image.size)
        assert adapter.image_processor.get_number_of_image_patches(height, width) // 4 == tokens.count
        assert ids[tokens.start - 1] == adapter.model.config.vision_start_token_id
        assert ids[tokens.start + tokens.count] == adapter.model.config.vision_end_token_id
        boxes = tokens.tile_boxes
        k = np.arange(rows * cols)  # row-major cells of equal size that exactly cover the page
        np.testing.assert_allclose(boxes[:, 0], (k % cols) * width / cols)
        np.testing.assert_allclose(boxes[:, 1], (k // cols) * height / rows)
        np.testing.assert_allclose(boxes[:, 2] - boxes[:, 0], width / cols)
        np.testing.assert_allclose(boxes[:, 3] - boxes[:, 1], height / rows)
        np.testing.assert_allclose(boxes[-1, 2:], image.size)


def token_darkness_from_pixels(adapter, pixel_values: torch.Tensor) -> np.ndarray:
    """Per LLM token, the mean intensity (0 black .. 1 white) of the processor's pixels for its 2x2 patches."""
    processor = adapter.image_processor
    patch = processor.patch_size
    channels = pixel_values.reshape(len(pixel_values), 3, -1, patch, patch)[:, 0]  # first channel, all frames
    intensity = channels * processor.image_std[0] + processor.image_mean[0]
    return intensity.reshape(-1, adapter.merge_size**2, intensity[0].numel()).mean(dim=(1, 2)).numpy()


def token_darkness_from_page(page: Image.Image, boxes: np.ndarray) -> np.ndarray:
    """Per box on the original page, the mean intensity of the page pixels whose centres fall inside it."""
    pixels = np.asarray(page.convert("L"), dtype=np.float64) / 255
    first = np.ceil(boxes - 0.5).astype(int)
    return np.array([pixels[y0:y1, x0:x1].mean() for x0, y0, x1, y1 in first])


@pytest.mark.parametrize("size", [(640, 480), (500, 1100)])
def test_black_squares_land_in_the_tokens_whose_processor_pixels_show_them(family, size):
    _, _, adapter = family
    page = Image.new("RGB", size, "white")
    square = (size[0] * 2 // 3, size[1] // 2, size[0] * 2 // 3 + 30, size[1] // 2 + 30)
    draw = ImageDraw.Draw(page)
    draw.rectangle(square, fill="black")
    inputs = adapter.image_inputs([page], "q?")
    boxes = inputs.image_tokens[0].tile_boxes
    processor = token_darkness_from_pixels(adapter, inputs.tensors["pixel_values"])
    cx, cy = (square[0] + square[2]) / 2, (square[1] + square[3]) / 2
    inside = np.flatnonzero((boxes[:, 0] <= cx) & (cx < boxes[:, 2]) & (boxes[:, 1] <= cy) & (cy < boxes[:, 3]))
    assert inside.tolist() == [int(processor.argmin())]
    # Many squares: our boxes and the processor's pixels agree token by token ...
    rng = np.random.default_rng(1)
    for _ in range(30):
        x, y = rng.integers(0, size[0]), rng.integers(0, size[1])
        w, h = rng.integers(15, 80, size=2)
        draw.rectangle((int(x), int(y), int(x + w), int(y + h)), fill="black")
    inputs = adapter.image_inputs([page], "q?")
    processor = token_darkness_from_pixels(adapter, inputs.tensors["pixel_values"])
    ours = token_darkness_from_page(page, boxes)
    assert np.corrcoef(ours, processor)[0, 1] > 0.97
    # ... and a deliberately wrong order (column-major instead of row-major) does not.
    rows, cols = (int(v) // 2 for v in inputs.tensors["image_grid_thw"][0, 1:])
    wrong = boxes.reshape(rows, cols, 4).transpose(1, 0, 2).reshape(-1, 4)
    assert np.corrcoef(token_darkness_from_page(page, wrong), processor)[0, 1] < 0.9


def test_image_tokens_get_2d_rope_positions(family):
    _, _, adapter = family
    inputs = adapter.image_inputs([Image.new("RGB", (300, 200), "white")], "What is the pass key?")
    positions, _ = adapter.model.model.get_rope_index(
        inputs.input_ids, mm_token_type_ids=inputs.tensors["mm_token_type_ids"],
        image_grid_thw=inputs.tensors["image_grid_thw"])
    span = inputs.image_tokens[0].positions
    rows, cols = (int(v) // 2 for v in inputs.tensors["image_grid_thw"][0, 1:])
    assert len(set(positions[1, 0, span.start : span.stop].tolist())) == rows
    assert len(set(positions[2, 0, span.start : span.stop].tolist())) == cols


@pytest.mark.parametrize("modality", ["image", "text"])
def test_capture_equals_eager_on_every_step_layer_and_head(family, passkey_dir, modality):
    name, _, adapter = family
    inputs = prompt_inputs(adapter, passkey_dir, 0, modality)
    plain = adapter.generate(inputs, max_new_tokens=5)
    with capture(adapter) as recorder:
        recorder.reset(inputs.prompt_length)
        generated = adapter.generate(inputs, max_new_tokens=5)
    assert generated == plain
    record = recorder.result()
    assert record.argmax.shape == (5, FAMILIES[name].layers, 4)
    attention = FAMILIES[name].attention
    other = [layer for layer in range(FAMILIES[name].layers) if layer not in attention]
    assert (record.argmax[:, attention] >= 0).all() and (record.argmax[:, other] == NOT_RECORDED).all()
    assert torch.isnan(record.sink[:, other]).all() and not torch.isnan(record.sink[:, attention]).any()
    assert verify_against_eager(adapter, inputs, generated, record) == []
    # A corrupted record is caught (the comparison is real), in an attention layer.
    record.argmax[0, attention[-1], 0] = (record.argmax[0, attention[-1], 0] + 1) % inputs.prompt_length
    assert verify_against_eager(adapter, inputs, generated, record)
    assert adapter.model.config.text_config._attn_implementation == "sdpa"


def test_masking_equals_zeroing_the_o_proj_input(family, passkey_dir):
    name, _, adapter = family
    sample = load_samples(passkey_dir)[1]
    inputs = adapter.image_inputs(sample.load_pages(), sample.question)
    attention = FAMILIES[name].attention
    heads = [(attention[0], 2), (attention[-1], 0)]
    hooks = [o_proj_zeroing_hooks(adapter, layer, head) for layer, head in heads]
    try:
        reference = logits(adapter, inputs)
        reference_tokens, reference_scores = greedy_with_scores(adapter, inputs)
    finally:
        for hook in hooks:
            hook.remove()
    with mask_heads(adapter, [f"l{layer}_h{head}" for layer, head in heads]):
        masked = logits(adapter, inputs)
        tokens, scores = greedy_with_scores(adapter, inputs)
    assert torch.equal(masked, reference)
    assert tokens == reference_tokens
    torch.testing.assert_close(scores, reference_scores, rtol=0, atol=1e-6)
    assert not torch.equal(masked, logits(adapter, inputs))  # the heads mattered
    if name == "qwen3_5":  # a linear-attention layer has no heads to mask: refused before the model is touched
        with pytest.raises(ValueError, match=r"l0_h1.*no attention heads"), mask_heads(adapter, ["l3_h0", "l0_h1"]):
            pass
        with pytest.raises(ValueError, match="no attention heads"), redistribute_sink_heads(adapter, ["l5_h2"]):
            pass
        assert adapter.model.config.text_config._attn_implementation == "sdpa"


@pytest.mark.parametrize("modality", ["image", "text"])
def test_sink_redistribution_equals_an_eager_reference(family, passkey_dir, modality):
    name, _, adapter = family
    inputs = prompt_inputs(adapter, passkey_dir, 2, modality)
    first, last = FAMILIES[name].attention[0], FAMILIES[name].attention[-1]
    heads, by_layer, beta = [f"l{first}_h1", f"l{last}_h3", f"l{last}_h0"], {first: [1], last: [3, 0]}, 0.3
    with redistribute_sink_heads(adapter, heads, beta):
        ours = logits(adapter, inputs)
        generated, step_scores = greedy_with_scores(adapter, inputs, steps=4)
    torch.testing.assert_close(ours, reference_logits(adapter, inputs.tensors, by_layer, beta), rtol=0, atol=1e-5)
    full = reference_logits(adapter, full_sequence_inputs(inputs, generated), by_layer, beta)
    torch.testing.assert_close(step_scores, full[0, inputs.prompt_length - 1 :], rtol=0, atol=1e-5)
    assert not torch.allclose(ours, logits(adapter, inputs), atol=1e-5)  # the edit did something


def test_step1_to_step3_end_to_end(family, tmp_path):
    name, out, _ = family
    spec = FAMILIES[name]
    data = tmp_path / "data"
    step1.run("passkey", step1.build_parser("passkey", "test").parse_args(
        ["--out", str(data), "--n", "2", "--lengths", "200"]))
    heads = [f"l{layer}_h{head}" for layer in range(spec.layers) for head in range(4)]
    not_scoreable = [layer for layer in range(spec.layers) if layer not in spec.attention]
    score_files = []
    for kind, suffix in (("image", "fg"), ("text", "te")):
        argv = ["--model_id", str(out), "--data", str(data), "--out", str(tmp_path / "scores"), "--n", "2",
                "--verify-eager", "--max_new_tokens", "6"]
        assert step2_main(kind, argv) == 0
        score_file = tmp_path / "scores" / kind / f"{out.name}_{suffix}.json"
        scores = json.loads(score_file.read_text())
        assert list(scores) == heads  # one key per (layer, head) of the config
        meta = json.loads(score_file.with_name(f"{out.name}_{suffix}.meta.json").read_text())
        assert meta["not_scoreable_layers"] == not_scoreable
        assert meta["n_samples"] == 2 and meta["n_failed"] == 0
        events = 2 if kind == "text" else meta["n_events"]
        for head, values in scores.items():
            layer = int(head[1:].split("_")[0])
            assert len(values) == (0 if layer in not_scoreable else events), head  # absent, not zeros
        if meta["n_events"] == 0:
            # A random model need not write the answer: step3 then refuses the file in one line.
            assert step3_extracted_heads.main(["--scores", str(score_file), "--out", str(tmp_path / "h.json")]) == 2
            score_files.append(score_file)
            continue
        heads_out = tmp_path / f"heads_{suffix}.json"
        assert step3_extracted_heads.main(["--scores", str(score_file), "--min_score", "0", "--min_frequency",
                                           "0", "--out", str(heads_out)]) == 0
        selected = {h["head"] for h in json.loads(heads_out.read_text())["heads"]}
        assert selected <= set(heads) and not any(int(h[1:].split("_")[0]) in not_scoreable for h in selected)
        score_files.append(score_file)
    report = build_report(score_files, tmp_path / "report")
    heatmaps = [p for p in report.figures if p.name.startswith("heatmap_")]
    # A file without signal (no events, or every head the same) has no heatmap, and the report says why;
    # test_heatmap_draws_not_scoreable_layers_hatched_not_as_zeros draws one whatever the model does.
    drawable = [f for f in score_files if len(set(load_scores(f).means.values())) > 1]
    assert len(heatmaps) == len(drawable) and all(p.stat().st_size > 0 for p in heatmaps)
    numbers = [entry["not_scoreable_layers"] for entry in report.numbers["files"].values()]
    assert numbers == [not_scoreable, not_scoreable]
    assert ("not scoreable" in report.summary) == bool(not_scoreable)


def test_prompt_rows_match_eager_in_the_attention_layers(family, passkey_dir):
    """The authors' text rule reads prompt rows too: recorded in attention layers, NOT_RECORDED elsewhere."""
    name, _, adapter = family
    spec = FAMILIES[name]
    sample = load_samples(passkey_dir)[1]
    inputs = adapter.text_inputs(sample.context, sample.question)
    rows = [5, 17, inputs.prompt_length - 3]
    with capture(adapter) as recorder:
        recorder.reset(inputs.prompt_length, [PromptRowArgmax(rows)])
        adapter.generate(inputs, max_new_tokens=2)
    ours = recorder.probe_result(PromptRowArgmax).by_row
    with text_attention(adapter, "eager"), torch.no_grad():
        attentions = adapter.model(**inputs.tensors, output_attentions=True).attentions
    assert len(attentions) == len(spec.attention)
    for position in rows:
        assert ours[position].shape == (spec.layers, 4)
        reference = torch.stack([a[0, :, position, :].argmax(-1) for a in attentions])
        assert torch.equal(ours[position][spec.attention], reference)
        others = [layer for layer in range(spec.layers) if layer not in spec.attention]
        assert (ours[position][others] == NOT_RECORDED).all()


def test_heatmap_draws_not_scoreable_layers_hatched_not_as_zeros(tmp_path, monkeypatch):
    """A hybrid model's score file: layers 0-2 have no events; the map masks them and hatches them."""
    from ocr_heads.report import figures
    from ocr_heads.scores.files import load_scores, save_scores

    per_head = {f"l{layer}_h{head}": ([] if layer < 3 else [0.5, 0.1 * head]) for layer in range(4)
                for head in range(2)}
    meta = {"kind": "ocr", "model": "hybrid", "num_layers": 4, "num_heads": 2, "not_scoreable_layers": [0, 1, 2]}
    save_scores(tmp_path / "hybrid_fg.json", per_head, meta)
    scores = load_scores(tmp_path / "hybrid_fg.json")
    assert scores.not_scoreable_layers == [0, 1, 2] and scores.means["l0_h0"] == 0.0
    drawn = {}
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.setdefault("fig", fig) and path)
    figures.heatmap(scores, ["l3_h1"], tmp_path / "map.png")
    ax = drawn["fig"].axes[0]
    grid = ax.images[0].get_array()
    assert grid.mask[:3].all() and not grid.mask[3].any()  # masked (drawn in the 'bad' grey), not 0
    assert grid[3].tolist() == [0.25, 0.3]
    hatched = [p for p in ax.patches if p.get_hatch() == "///"]
    assert sorted(round(p.get_y() + 0.5) for p in hatched) == [0, 1, 2]
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert any("not scoreable" in label for label in labels)
