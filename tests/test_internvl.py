"""The InternVL family: adapter geometry against the real image processor, the tiny model end to end
(step1 -> step2 image/text -> step3), capture == eager, interventions, and the InternVL2 weight conversion."""

import json

import numpy as np
import pytest
import torch
from family_battery import block_means, build_tiny_family
from PIL import Image, ImageDraw
from test_interventions import prompt_inputs

import step3_extracted_heads
from ocr_heads.attention import capture, text_attention, verify_against_eager
from ocr_heads.attention.edits import mask_heads, redistribute_sink_heads
from ocr_heads.data.samples import load_samples
from ocr_heads.models import load_adapter, model_type
from ocr_heads.models.internvl import IMAGENET_MEAN, IMAGENET_STD, InternVLAdapter, page_token_boxes, tile_layout
from ocr_heads.pipeline import step1
from ocr_heads.pipeline.step2 import main as step2_main

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
    return build_tiny_family(tmp_path_factory, "internvl")  # the acceptance command


@pytest.fixture(scope="module")
def adapter(internvl_dir):
    return load_adapter(str(internvl_dir))


def token_intensity_from_pixels(pixel_values: torch.Tensor, grid: int) -> np.ndarray:
    """Per LLM token, in prompt order (tiles in order, each row-major), the mean intensity of its pixel block."""
    # undo the normalisation: 0 black .. 1 white
    return block_means(pixel_values[:, 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0], grid)


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

    from ocr_heads.models.tiny.build import build_tiny_internvl

    a = load_file(build_tiny_internvl(tmp_path / "a", seed=3) / "model.safetensors")
    b = load_file(build_tiny_internvl(tmp_path / "b", seed=3) / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_capture_is_scoped_to_the_language_model_and_equals_eager(adapter, passkey_dir):
    config = adapter.model.config
    for modality in ("image", "text"):
        inputs = prompt_inputs(adapter, passkey_dir, 0, modality)
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
        code = step2_main(kind, argv)
        score_file = tmp_path / "scores" / kind / f"tiny-internvl_{suffix}.json"
        scores = json.loads(score_file.read_text())
        assert list(scores) == heads  # exactly layers x heads keys of the config
        meta = json.loads(score_file.with_name(f"tiny-internvl_{suffix}.meta.json").read_text())
        assert meta["n_samples"] == 2 and meta["n_failed"] == 0 and "noise" in meta["warning"]
        # Random weights may never write the answer: expected of such a model (exit 0), and step3 refuses its file.
        empty = meta["n_events"] == 0
        assert code == 0
        out = tmp_path / f"heads_{suffix}.json"
        assert step3_extracted_heads.main(["--scores", str(score_file), "--min_score", "0", "--min_frequency", "0",
                                           "--out", str(out)]) == (2 if empty else 0)
        if empty:
            continue
        assert {h["head"] for h in json.loads(out.read_text())["heads"]} <= set(heads)


# -- InternVL2 (remote-code layout) -> native conversion ---------------------------------------------------

INTERNLM2_SPECIALS = ["<|endoftext|>", "<s>", "</s>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>"]
LM = {"hidden": 64, "heads": 4, "kv_heads": 2, "layers": 2, "ffn": 96}
VIT = {"hidden": 32, "heads": 2, "layers": 2, "ffn": 48, "patches": 32}  # 448 px / 14 px patches


def build_internvl2_checkpoint(out, seed: int = 0) -> dict[str, torch.Tensor]:
    """A tiny random checkpoint in InternVL2's own layout (InternViT + InternLM2 keys, fused qkv / wqkv)."""
    from safetensors.torch import save_file

    from ocr_heads.models.tiny.charset import build_char_tokenizer

    out.mkdir(parents=True)
    tokenizer = build_char_tokenizer(INTERNLM2_SPECIALS, "unused")
    tokenizer.save_pretrained(out)
    vocab, d, hd = len(tokenizer), LM["hidden"], LM["hidden"] // LM["heads"]
    llm = {"architectures": ["InternLM2ForCausalLM"], "model_type": "internlm2", "vocab_size": vocab,
           "hidden_size": d, "intermediate_size": LM["ffn"], "num_hidden_layers": LM["layers"],
           "num_attention_heads": LM["heads"], "num_key_value_heads": LM["kv_heads"], "hidden_act": "silu",
           "max_position_embeddings": 32768, "rms_norm_eps": 1e-5, "rope_theta": 1000000,
           "rope_scaling": {"type": "dynamic", "factor": 2.0}, "bias": False, "tie_word_embeddings": False,
           "bos_token_id": tokenizer.convert_tokens_to_ids("<s>"), "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    vision = {"architectures": ["InternVisionModel"], "hidden_size": VIT["hidden"], "intermediate_size": VIT["ffn"],
              "num_hidden_layers": VIT["layers"], "num_attention_heads": VIT["heads"], "image_size": 448,
              "patch_size": 14, "qkv_bias": True, "qk_normalization": False, "norm_type": "layer_norm",
              "layer_norm_eps": 1e-6, "hidden_act": "gelu", "initializer_factor": 0.1}
    config = {"model_type": "internvl_chat", "architectures": ["InternVLChatModel"], "llm_config": llm,
              "vision_config": vision, "downsample_ratio": 0.5, "ps_version": "v2", "select_layer": -1,
              "force_image_size": 448, "template": "internlm2-chat", "use_thumbnail": True,
              "dynamic_image_size": True, "min_dynamic_patch": 1, "max_dynamic_patch": 6}
    (out / "config.json").write_text(json.dumps(config))
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=0.2, offset=0.0):
        return (offset + scale * torch.randn(*shape, generator=generator)).contiguous()

    v, f = VIT["hidden"], VIT["ffn"]
    w = {"vision_model.embeddings.class_embedding": rand(1, 1, v),
         "vision_model.embeddings.patch_embedding.weight": rand(v, 3, 14, 14, scale=0.05),
         "vision_model.embeddings.patch_embedding.bias": rand(v),
         "vision_model.embeddings.position_embedding": rand(1, VIT["patches"] ** 2 + 1, v)}
    for i in range(VIT["layers"]):
        p = f"vision_model.encoder.layers.{i}."
        w |= {p + "attn.qkv.weight": rand(3 * v, v), p + "attn.qkv.bias": rand(3 * v),
              p + "attn.proj.weight": rand(v, v), p + "attn.proj.bias": rand(v),
              p + "ls1": rand(v, offset=0.5), p + "ls2": rand(v, offset=0.5),
              p + "norm1.weight": rand(v, offset=1.0), p + "norm1.bias": rand(v),
              p + "norm2.weight": rand(v, offset=1.0), p + "norm2.bias": rand(v),
              p + "mlp.fc1.weight": rand(f, v), p + "mlp.fc1.bias": rand(f),
              p + "mlp.fc2.weight": rand(v, f), p + "mlp.fc2.bias": rand(v)}
    w |= {"mlp1.0.weight": rand(4 * v, offset=1.0), "mlp1.0.bias": rand(4 * v),
          "mlp1.1.weight": rand(d, 4 * v), "mlp1.1.bias": rand(d), "mlp1.3.weight": rand(d, d), "mlp1.3.bias": rand(d),
          "language_model.model.tok_embeddings.weight": rand(vocab, d, scale=1.0),
          "language_model.model.norm.weight": rand(d, offset=1.0),
          "language_model.output.weight": rand(vocab, d)}
    qkv_rows = (LM["heads"] + 2 * LM["kv_heads"]) * hd
    for i in range(LM["layers"]):
        p = f"language_model.model.layers.{i}."
        w |= {p + "attention.wqkv.weight": rand(qkv_rows, d), p + "attention.wo.weight": rand(d, d),
              p + "feed_forward.w1.weight": rand(LM["ffn"], d), p + "feed_forward.w3.weight": rand(LM["ffn"], d),
              p + "feed_forward.w2.weight": rand(d, LM["ffn"]),
              p + "attention_norm.weight": rand(d, offset=1.0), p + "ffn_norm.weight": rand(d, offset=1.0)}
    save_file(w, str(out / "model.safetensors"))
    return w


def internvl2_reference_features(w: dict, pixel_values: torch.Tensor) -> torch.Tensor:
    """InternVL2's extract_feature + mlp1, written from its remote code's definitions: (tiles, 256, lm hidden)."""
    F = torch.nn.functional
    # InternViT: CLS + patches + positions, pre-norm blocks with layer scale; fused qkv is [q; k; v].
    x = F.conv2d(pixel_values, w["vision_model.embeddings.patch_embedding.weight"],
                 w["vision_model.embeddings.patch_embedding.bias"], stride=14).flatten(2).transpose(1, 2)
    n, v, heads = len(x), VIT["hidden"], VIT["heads"]
    x = torch.cat([w["vision_model.embeddings.class_embedding"].expand(n, 1, v), x], dim=1)
    x = x + w["vision_model.embeddings.position_embedding"]
    for i in range(VIT["layers"]):
        p = f"vision_model.encoder.layers.{i}."
        h = F.layer_norm(x, (v,), w[p + "norm1.weight"], w[p + "norm1.bias"], eps=1e-6)
        q, k, val = F.linear(h, w[p + "attn.qkv.weight"], w[p + "attn.qkv.bias"]).reshape(
            n, -1, 3, heads, v // heads).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) * (v // heads) ** -0.5, dim=-1) @ val
        x = x + F.linear(att.transpose(1, 2).reshape(n, -1, v), w[p + "attn.proj.weight"], w[p + "attn.proj.bias"]) \
            * w[p + "ls1"]
        h = F.layer_norm(x, (v,), w[p + "norm2.weight"], w[p + "norm2.bias"], eps=1e-6)
        h = F.linear(F.gelu(F.linear(h, w[p + "mlp.fc1.weight"], w[p + "mlp.fc1.bias"])), w[p + "mlp.fc2.weight"],
                     w[p + "mlp.fc2.bias"])
        x = x + h * w[p + "ls2"]
    # extract_feature: drop CLS, pixel shuffle (ps_version v2), mlp1.
    side = VIT["patches"]
    feats = x[:, 1:].reshape(n, side, side, v)
    feats = feats.view(n, side, side // 2, v * 2).permute(0, 2, 1, 3).contiguous()
    feats = feats.view(n, side // 2, side // 2, v * 4).permute(0, 2, 1, 3).contiguous().reshape(n, -1, v * 4)
    feats = F.layer_norm(feats, (4 * v,), w["mlp1.0.weight"], w["mlp1.0.bias"])
    return F.linear(F.gelu(F.linear(feats, w["mlp1.1.weight"], w["mlp1.1.bias"])), w["mlp1.3.weight"],
                    w["mlp1.3.bias"])


def internvl2_reference_logits(w: dict, input_ids: torch.Tensor, pixel_values: torch.Tensor | None,
                               image_token_id: int) -> torch.Tensor:
    """InternVL2's forward (InternLM2 on the unconverted weights; fused grouped wqkv), image tokens filled in."""
    F = torch.nn.functional
    ids = input_ids[0]
    x = w["language_model.model.tok_embeddings.weight"][ids].clone()
    if pixel_values is not None:  # image features replace the <IMG_CONTEXT> embeddings in order
        x[ids == image_token_id] = internvl2_reference_features(w, pixel_values).reshape(-1, LM["hidden"])
    length, d, nh, nkv = len(ids), LM["hidden"], LM["heads"], LM["kv_heads"]
    hd, groups = d // nh, nh // nkv
    inv_freq = 1.0 / (1000000 ** (torch.arange(0, hd, 2).float() / hd))
    angles = torch.arange(length).float()[:, None] * inv_freq
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()

    def rope(t):  # (heads, length, hd), rotate_half convention
        return t * cos + torch.cat([-t[..., hd // 2 :], t[..., : hd // 2]], -1) * sin

    def rms(t, weight):
        return weight * t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + 1e-5)

    causal = torch.ones(length, length, dtype=torch.bool).tril()
    for i in range(LM["layers"]):
        p = f"language_model.model.layers.{i}."
        qkv = (rms(x, w[p + "attention_norm.weight"]) @ w[p + "attention.wqkv.weight"].T).view(length, nkv,
                                                                                             groups + 2, hd)
        q = rope(qkv[:, :, :groups].reshape(length, nh, hd).transpose(0, 1))
        k = rope(qkv[:, :, -2].transpose(0, 1)).repeat_interleave(groups, dim=0)
        val = qkv[:, :, -1].transpose(0, 1).repeat_interleave(groups, dim=0)
        scores = (q @ k.transpose(-1, -2) * hd**-0.5).masked_fill(~causal, float("-inf"))
        att = (torch.softmax(scores, -1) @ val).transpose(0, 1).reshape(length, d)
        x = x + att @ w[p + "attention.wo.weight"].T
        h = rms(x, w[p + "ffn_norm.weight"])
        x = x + (F.silu(h @ w[p + "feed_forward.w1.weight"].T) * (h @ w[p + "feed_forward.w3.weight"].T)) \
            @ w[p + "feed_forward.w2.weight"].T
    return rms(x, w["language_model.model.norm.weight"]) @ w["language_model.output.weight"].T


def test_internvl2_conversion_matches_the_reference_forward(tmp_path, monkeypatch):
    from ocr_heads.models.internvl2_convert import INTERNVL2_SYSTEM, converted_checkpoint

    source = tmp_path / "InternVL2-tiny"
    weights = build_internvl2_checkpoint(source)
    monkeypatch.setenv("OCR_HEADS_CACHE", str(tmp_path / "cache"))
    assert model_type(str(source)) == "internvl_chat"
    # Native protocol: the conversion must keep the checkpoint's own tiling (the paper's is one tile, no thumbnail).
    converted = load_adapter(str(source), protocol="native")  # converts once into the cache, then loads natively
    native = tmp_path / "cache" / "converted" / str(source).strip("/").replace("/", "--")
    assert (native / "config.json").is_file() and converted.name == "InternVL2-tiny"
    assert isinstance(converted, InternVLAdapter)
    assert (converted.shape.num_layers, converted.shape.num_heads, converted.shape.num_kv_heads) == (2, 4, 2)
    config = converted.model.config
    assert config.text_config.model_type == "llama" and config.text_config.rope_parameters["rope_type"] == "dynamic"
    page = Image.new("RGB", (635, 482), "white")
    ImageDraw.Draw(page).text((20, 20), "The pass key is 48213.", fill="black")
    inputs = converted.image_inputs([page], "What is the pass key?")
    assert inputs.tensors["pixel_values"].shape[0] == 7  # 3x2 tiles (max_dynamic_patch 6) + thumbnail
    # InternVL2's internlm2-chat conversation: default system turn, turns joined by <|im_end|> without newline.
    prompt = converted.tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False,
                                                     add_generation_prompt=True)
    turns = "<|im_start|>user\nx<|im_end|><|im_start|>assistant\n"
    assert prompt == f"<|im_start|>system\n{INTERNVL2_SYSTEM}<|im_end|>{turns}"
    with torch.no_grad():
        ours = converted.model(**inputs.tensors).logits[0]
        reference = internvl2_reference_logits(weights, inputs.input_ids, inputs.tensors["pixel_values"],
                                               config.image_token_id)
    torch.testing.assert_close(ours, reference, atol=2e-4, rtol=2e-4)
    # Text only, and capture works through the converted model like any native one.
    text = converted.text_inputs("hay. The pass key is 123. hay", "What is the pass key?")
    with torch.no_grad():
        torch.testing.assert_close(converted.model(**text.tensors).logits[0],
                                   internvl2_reference_logits(weights, text.input_ids, None,
                                                              config.image_token_id), atol=2e-4, rtol=2e-4)
    with capture(converted) as recorder:
        generated = converted.generate(text, max_new_tokens=3)
    assert verify_against_eager(converted, text, generated, recorder.result()) == []
    # Cached: a second call finds the finished conversion and does not touch the source.
    (source / "model.safetensors").unlink()
    assert converted_checkpoint(str(source)) == native


def test_internvl2_conversion_refuses_what_it_cannot_convert(tmp_path, capsys):
    from ocr_heads.models.internvl2_convert import main as convert_main
    from ocr_heads.models.internvl2_convert import split_wqkv

    source = tmp_path / "src"
    build_internvl2_checkpoint(source)
    config = json.loads((source / "config.json").read_text())
    config["ps_version"] = "v1"
    (source / "config.json").write_text(json.dumps(config))
    assert convert_main(["--model_id", str(source), "--out", str(tmp_path / "out")]) == 2
    assert "ps_version" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    # The grouped wqkv layout on a hand-made example: rows (kv head, [q0, q1, k, v], dim).
    rows = torch.arange(2 * 4 * 3).float()[:, None]  # 2 kv heads, 2 groups, head_dim 3
    q, k, v = split_wqkv(rows, num_heads=4, num_kv_heads=2)
    assert q.flatten().tolist() == [0, 1, 2, 3, 4, 5, 12, 13, 14, 15, 16, 17]
    assert k.flatten().tolist() == [6, 7, 8, 18, 19, 20] and v.flatten().tolist() == [9, 10, 11, 21, 22, 23]
