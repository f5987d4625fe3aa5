"""Hub-faithful fixtures: published metadata files, shrunk sizes, real vocabulary where it can be had."""

import json
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from transformers import AutoTokenizer

from ocr_heads.models import load_adapter
from ocr_heads.models.hub_fixture import (
    INTERNVIT_SIZES,
    QWEN2_VL_VISION_SIZES,
    TEXT_SIZES,
    build_hub_fixture,
    published_added_tokens,
)

HUB = Path(__file__).parent / "fixtures" / "hub"
QWEN2_VL_2B = HUB / "Qwen2-VL-2B-Instruct"
# The published Qwen2-VL template rendering one user turn (an image, then the question), written out by hand.
PUBLISHED_IMAGE_TURN = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is the pass key?<|im_end|>\n"
                        "<|im_start|>assistant\n")


def published(name: str, file: str = "config.json") -> dict:
    return json.loads((HUB / name / file).read_text())


def page() -> Image.Image:
    image = Image.new("RGB", (320, 240), "white")
    ImageDraw.Draw(image).text((20, 20), "The pass key is 48213.", fill="black")
    return image


def fixture_vocab(directory: Path) -> str:
    return json.loads((directory / "ocr_heads_fixture.json").read_text())["vocab"]


def assert_only_sizes_differ(ours: dict, theirs: dict, shrunk: set[str], where: str = "") -> None:
    """Every key of the published config is in ours with the published value, except the shrunk sizes."""
    for key, value in theirs.items():
        assert key in ours, f"{where}{key} missing"
        if isinstance(value, dict):
            assert_only_sizes_differ(ours[key], value, shrunk, f"{where}{key}.")
        elif f"{where}{key}" not in shrunk:
            assert ours[key] == value, f"{where}{key}: {ours[key]!r} != published {value!r}"


QWEN2_VL_SHRUNK = {*TEXT_SIZES, "max_window_layers", "rope_scaling.mrope_section",
                   *(f"vision_config.{k}" for k in (*QWEN2_VL_VISION_SIZES, "hidden_size"))}


# -- the real Qwen2 vocabulary ------------------------------------------------------------------------------


def test_qwen2_vocabulary_gives_the_published_ids(qwen2_vocab_tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(qwen2_vocab_tokenizer_dir)

    def ids(text):
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    assert ids("Hello") == [9707] and ids(" world") == [1879]
    digits = ids("12345")
    assert len(digits) == 5 and [tokenizer.decode([i]) for i in digits] == list("12345")
    # A letter after a space is another token: what recall must handle (issue 11, item 3).
    assert ids("e") == [68] and ids(" e") == [384] and ids(" blue") == [6303]
    assert len(tokenizer) == 151657
    for token, token_id in published_added_tokens(QWEN2_VL_2B).items():
        assert tokenizer.convert_tokens_to_ids(token) == token_id, token
        assert ids(token) == [token_id]  # never split
    assert tokenizer.decode(ids("Pass key: 48213, déjà vu 你好")) == "Pass key: 48213, déjà vu 你好"


def test_published_chat_template_renders_an_image_turn(qwen2_vocab_tokenizer_dir, tmp_path):
    # The published tokenizer_config.json (its chat template, special-token roles) over the real vocabulary:
    # exactly how a hub checkpoint's tokenizer loads.
    (tmp_path / "tokenizer_config.json").write_text((QWEN2_VL_2B / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer.json").write_bytes((qwen2_vocab_tokenizer_dir / "tokenizer.json").read_bytes())
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    turn = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is the pass key?"}]}]
    assert tokenizer.apply_chat_template(turn, tokenize=False, add_generation_prompt=True) == PUBLISHED_IMAGE_TURN
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    # chat_template.json (the processor's copy) is the same template.
    assert published("Qwen2-VL-2B-Instruct", "chat_template.json")["chat_template"] == tokenizer.chat_template


# -- Qwen2-VL ----------------------------------------------------------------------------------------------


def test_hub_qwen2_vl_fixture_keeps_the_published_format(hub_qwen2_vl_dir):
    ours = json.loads((hub_qwen2_vl_dir / "config.json").read_text())
    theirs = published("Qwen2-VL-2B-Instruct")
    # Still the old flat layout: no text_config, M-RoPE as rope_scaling {"type": "mrope"}.
    assert "text_config" not in ours and ours["rope_scaling"]["type"] == "mrope"
    assert_only_sizes_differ(ours, theirs, QWEN2_VL_SHRUNK)
    assert ours["rope_scaling"]["mrope_section"] == [2, 3, 3]  # [16, 24, 24] scaled to head_dim 16
    for name in ("preprocessor_config.json", "generation_config.json", "tokenizer_config.json", "chat_template.json"):
        assert (hub_qwen2_vl_dir / name).read_text() == (QWEN2_VL_2B / name).read_text(), name
    pre = json.loads((hub_qwen2_vl_dir / "preprocessor_config.json").read_text())
    assert (pre["min_pixels"], pre["max_pixels"]) == (3136, 12845056) and "size" not in pre


def test_hub_qwen2_vl_fixture_loads_through_load_adapter_and_generates(hub_qwen2_vl_dir):
    adapter = load_adapter(str(hub_qwen2_vl_dir))
    config, theirs = adapter.model.config, published("Qwen2-VL-2B-Instruct")
    # The hub format was parsed: flat keys became text_config, rope_scaling became rope_parameters.
    text = config.text_config
    assert (text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads) == (2, 4, 2)
    assert text.rope_parameters["mrope_section"] == [2, 3, 3]
    assert text.rope_parameters["rope_theta"] == theirs["rope_theta"] and text.vocab_size == theirs["vocab_size"]
    assert config.tie_word_embeddings is True
    # Image-token ids agree between config and tokenizer, at the published values.
    tokenizer = adapter.tokenizer
    for key, token in [("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
                       ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>")]:
        assert getattr(config, key) == theirs[key] == tokenizer.convert_tokens_to_ids(token), key
    assert adapter.image_token_id == 151655
    pre = published("Qwen2-VL-2B-Instruct", "preprocessor_config.json")
    processor = adapter.image_processor
    assert (processor.patch_size, processor.merge_size) == (pre["patch_size"], pre["merge_size"])
    assert list(processor.image_mean) == pre["image_mean"]

    inputs = adapter.image_inputs([page()], "What is the pass key?")
    grid = inputs.tensors["image_grid_thw"][0]
    count = int(grid.prod()) // 4
    assert inputs.image_tokens[0].count == count == int(inputs.tensors["mm_token_type_ids"].sum())
    # The published template around the expanded image: one <|image_pad|> per 28x28 tile.
    expected = PUBLISHED_IMAGE_TURN.replace("<|image_pad|>", "<|image_pad|>" * count)
    assert tokenizer.decode(inputs.input_ids[0]) == expected
    generated = adapter.generate(inputs, max_new_tokens=3)
    assert len(generated) == 3 and all(0 <= t < text.vocab_size for t in generated)
    if fixture_vocab(hub_qwen2_vl_dir) == "qwen2":  # else the char stand-in (no PyPI, no cache)
        assert tokenizer(" blue", add_special_tokens=False)["input_ids"] == [6303]


def test_hub_qwen2_vl_7b_char_fixture(tmp_path):
    """7B: untied embeddings and a larger vocabulary; the char stand-in keeps every published special id."""
    out = build_hub_fixture("Qwen2-VL-7B-Instruct", tmp_path / "Qwen2-VL-7B-Instruct", vocab="char")  # by name
    theirs = published("Qwen2-VL-7B-Instruct")
    assert_only_sizes_differ(json.loads((out / "config.json").read_text()), theirs, QWEN2_VL_SHRUNK)
    adapter = load_adapter(str(out))
    assert adapter.model.config.tie_word_embeddings is False
    assert adapter.model.lm_head.weight.shape == (theirs["vocab_size"], TEXT_SIZES["hidden_size"])
    tokenizer = adapter.tokenizer
    for token, token_id in published_added_tokens(HUB / "Qwen2-VL-7B-Instruct").items():
        assert tokenizer.convert_tokens_to_ids(token) == token_id, token
    encoded = tokenizer("ab 12\n", add_special_tokens=False)["input_ids"]
    assert len(encoded) == 6 and tokenizer.decode(encoded) == "ab 12\n"  # one token per character
    assert len(adapter.generate(adapter.image_inputs([page()], "What?"), max_new_tokens=2)) == 2


def test_build_hub_fixture_refuses_unknown_inputs(tmp_path, capsys):
    with pytest.raises(ValueError, match="vocab"):
        build_hub_fixture(QWEN2_VL_2B, tmp_path / "a", vocab="bpe")
    with pytest.raises(ValueError, match="special tokens"):  # InternLM2's ids are not Qwen2's
        build_hub_fixture(HUB / "InternVL2-8B", tmp_path / "b", vocab="qwen2")
    from ocr_heads.models.hub_fixture import main

    assert main(["--name", "Qwen2-VL-9B", "--out", str(tmp_path / "d")]) == 2
    assert "Qwen2-VL-2B-Instruct" in capsys.readouterr().err  # names the known folders
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "llava"}))
    with pytest.raises(ValueError, match="llava"):
        build_hub_fixture(other, tmp_path / "c")


# -- InternVL2 ---------------------------------------------------------------------------------------------


def test_hub_internvl2_fixture_converts_and_loads(hub_internvl2_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("OCR_HEADS_CACHE", str(tmp_path / "cache"))
    ours = json.loads((hub_internvl2_dir / "config.json").read_text())
    theirs = published("InternVL2-8B")
    shrunk = {*(f"llm_config.{k}" for k in TEXT_SIZES), *(f"vision_config.{k}" for k in INTERNVIT_SIZES)}
    assert_only_sizes_differ(ours, theirs, shrunk)
    assert (hub_internvl2_dir / "tokenizer_config.json").read_text() == (HUB / "InternVL2-8B" /
                                                                        "tokenizer_config.json").read_text()

    adapter = load_adapter(str(hub_internvl2_dir))  # the InternVL2 -> native conversion real checkpoints take
    config, llm = adapter.model.config, theirs["llm_config"]
    text = config.text_config
    assert (text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads) == (2, 4, 2)
    assert text.vocab_size == llm["vocab_size"] and text.rms_norm_eps == llm["rms_norm_eps"]
    assert text.rope_parameters == {"rope_type": "dynamic", "rope_theta": float(llm["rope_theta"]),
                                    "factor": llm["rope_scaling"]["factor"]}
    ids = published_added_tokens(HUB / "InternVL2-8B")
    assert config.image_token_id == ids["<IMG_CONTEXT>"] == adapter.tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    for token, token_id in ids.items():
        assert adapter.tokenizer.convert_tokens_to_ids(token) == token_id, token
    assert ids["<|im_end|>"] in adapter.model.generation_config.eos_token_id
    assert config.ocr_heads_random_weights is True  # its scores are labelled noise after conversion too
    converted = next((tmp_path / "cache" / "converted").iterdir())
    processor = json.loads((converted / "preprocessor_config.json").read_text())
    assert processor["max_patches"] == theirs["max_dynamic_patch"]  # the checkpoint's own tiling, carried over

    inputs = adapter.image_inputs([page()], "What is the pass key?")
    assert int((inputs.input_ids == config.image_token_id).sum()) == sum(t.count for t in inputs.image_tokens)
    with torch.no_grad():
        generated = adapter.generate(inputs, max_new_tokens=2)
    assert len(generated) == 2


# -- a step1 page through step2 ---------------------------------------------------------------------------


def test_step1_page_goes_through_step2_on_the_hub_qwen2_vl(hub_qwen2_vl_dir, passkey_dir, tmp_path):
    from ocr_heads.pipeline.step2 import main

    out = tmp_path / "scores"
    # A random model does not answer: the run writes its files and exits 3 (no answer-token events).
    assert main("image", ["--model_id", str(hub_qwen2_vl_dir), "--data", str(passkey_dir), "--out", str(out),
                          "--n", "1", "--max_new_tokens", "4"]) in (0, 3)
    stem = "Qwen2-VL-2B-Instruct_fg"
    scores = json.loads((out / "image" / f"{stem}.json").read_text())
    assert sorted(scores) == sorted(f"l{layer}_h{head}" for layer in range(2) for head in range(4))
    meta = json.loads((out / "image" / f"{stem}.meta.json").read_text())
    assert meta["n_samples"] == 1 and meta["n_failed"] == 0 and "noise" in meta["warning"]


# -- tiny --vocab qwen2 and the unavailable case ---------------------------------------------------------


def test_tiny_cli_builds_the_real_vocabulary_model(qwen2_vocab_tokenizer_dir, tmp_path):
    from ocr_heads.models.tiny.build import main

    main(["--out", str(tmp_path / "tiny"), "--vocab", "qwen2", "--layers", "1"])
    adapter = load_adapter(str(tmp_path / "tiny"))
    tokenizer, config = adapter.tokenizer, adapter.model.config
    assert tokenizer(" blue", add_special_tokens=False)["input_ids"] == [6303]
    for token, token_id in published_added_tokens(QWEN2_VL_2B).items():
        assert tokenizer.convert_tokens_to_ids(token) == token_id, token
    assert config.image_token_id == 151655 and config.vision_start_token_id == 151652
    assert config.text_config.eos_token_id == 151645 and config.text_config.pad_token_id == 151643
    assert len(adapter.generate(adapter.image_inputs([page()], "What is the pass key?"), max_new_tokens=2)) == 2


def test_unavailable_vocabulary_is_a_clear_error(tmp_path, monkeypatch, capsys):
    from ocr_heads.models.tiny import qwen2_vocab
    from ocr_heads.models.tiny.build import main

    monkeypatch.setenv("OCR_HEADS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OCR_HEADS_QWEN_TIKTOKEN", str(tmp_path / "missing.tiktoken"))
    with pytest.raises(qwen2_vocab.VocabUnavailable, match="missing.tiktoken"):
        qwen2_vocab.qwen2_tokenizer_dir()
    assert main(["--out", str(tmp_path / "tiny"), "--vocab", "qwen2"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: OCR_HEADS_QWEN_TIKTOKEN=")
    # A truncated ranks file is refused, not converted into a wrong vocabulary.
    short = tmp_path / "short.tiktoken"
    short.write_text("IQ== 0\nIg== 1\n")
    with pytest.raises(qwen2_vocab.VocabUnavailable, match="expected ranks"):
        qwen2_vocab.read_ranks(short)
