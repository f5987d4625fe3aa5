"""Text-only base LLMs (Qwen2-Instruct; InternLM2.5-chat converted to Llama): built from their published files, prompted
with their own chat templates, refused by page-reading steps, and the family battery on the text modality."""

import json
import os

import pytest
import torch
from family_battery import (
    build_tiny_family,
    check_capture_equals_eager,
    check_masking_equals_o_proj_hook,
    check_sink_equals_eager_reference,
    check_step1_to_step3,
)
from safetensors import safe_open

from ocr_heads.core.errors import UserError
from ocr_heads.data.samples import load_samples
from ocr_heads.models import load_adapter
from ocr_heads.models.text_lm import TextLMAdapter, TextOnlyModel
from ocr_heads.models.tiny.hub_configs import HUB_CONFIGS
from ocr_heads.pipeline.step2 import main as step2_main

TEXT = ("text",)


@pytest.fixture(scope="module", autouse=True)
def conversion_cache(tmp_path_factory):
    """InternLM2 checkpoints convert on first load into $OCR_HEADS_CACHE/converted: a tmp dir here. The Qwen2 BPE
    ranks stay where the real cache has them (named by $OCR_HEADS_QWEN_TIKTOKEN)."""
    from ocr_heads.models.tiny.qwen2_vocab import VocabUnavailable, ranks_file

    with pytest.MonkeyPatch.context() as patch:
        try:
            patch.setenv("OCR_HEADS_QWEN_TIKTOKEN", str(ranks_file()))
        except VocabUnavailable:
            pass  # the qwen2 fixture skips
        patch.setenv("OCR_HEADS_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def qwen2_dir(tmp_path_factory):
    if "OCR_HEADS_QWEN_TIKTOKEN" not in os.environ:
        pytest.skip("the real Qwen2 vocabulary cannot be had here")
    return build_tiny_family(tmp_path_factory, "qwen2")  # the acceptance command, in-process


@pytest.fixture(scope="module")
def internlm2_dir(tmp_path_factory):
    return build_tiny_family(tmp_path_factory, "internlm2")


@pytest.fixture(scope="module", params=["qwen2", "internlm2"])
def adapter(request):
    return load_adapter(str(request.getfixturevalue(f"{request.param}_dir")))


def published(checkpoint: str, name: str = "config.json") -> dict:
    return json.loads((HUB_CONFIGS / checkpoint / name).read_text())


def test_qwen2_keeps_the_published_config_and_vocabulary(qwen2_dir):
    config = json.loads((qwen2_dir / "config.json").read_text())
    source = published("Qwen2-1.5B-Instruct")
    shrunk = {"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads"}
    # Every published key keeps its value (transformers writes rope_theta into rope_parameters, dtype for torch_dtype).
    kept = {k: v for k, v in source.items() if k not in shrunk | {"torch_dtype", "rope_theta"}}
    assert {k: config[k] for k in kept} == kept
    assert config["rope_parameters"]["rope_theta"] == source["rope_theta"] == 1e6
    assert (config["vocab_size"], config["tie_word_embeddings"], config["eos_token_id"]) == (151936, True, 151645)
    adapter = load_adapter(str(qwen2_dir))
    # The real Qwen2 BPE: " pass" is one token, digits one each; Qwen2-Instruct's three special tokens at their ids.
    assert adapter.tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [
        151643, 151644, 151645]
    assert len(adapter.tokenizer(" pass key", add_special_tokens=False)["input_ids"]) == 2
    assert adapter.tokenizer("48213", add_special_tokens=False)["input_ids"] == [
        adapter.tokenizer.convert_tokens_to_ids(d) for d in "48213"]


def test_prompts_are_each_models_own_chat_template(adapter):
    inputs = adapter.text_inputs("CONTEXT", "Q?")
    prompt = adapter.tokenizer.decode(inputs.input_ids[0])
    if adapter.config.model_type == "qwen2":  # Qwen2-Instruct: a default system turn
        expected = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                    "<|im_start|>user\nCONTEXT\n\nQ?<|im_end|>\n<|im_start|>assistant\n")
    else:  # InternLM2.5-chat: begin-of-sequence, no system turn
        expected = "<s><|im_start|>user\nCONTEXT\n\nQ?<|im_end|>\n<|im_start|>assistant\n"
    assert prompt == expected
    ids = inputs.input_ids[0].tolist()
    assert ids.count(adapter.tokenizer.convert_tokens_to_ids("<|im_start|>")) == prompt.count("<|im_start|>")
    inside = [k for k, (start, _) in enumerate(inputs.context_offsets) if start >= 0]
    assert adapter.tokenizer.decode(ids[inside[0]: inside[-1] + 1]) == "CONTEXT"


def test_internlm2_is_converted_to_native_llama(internlm2_dir):
    adapter = load_adapter(str(internlm2_dir))
    assert isinstance(adapter, TextLMAdapter) and adapter.config.model_type == "llama"
    assert adapter.name == internlm2_dir.name
    source = json.loads((internlm2_dir / "config.json").read_text())
    assert adapter.config.rope_parameters["rope_type"] == "dynamic" and adapter.config.rope_parameters["factor"] == 2.0
    assert adapter.config.rope_parameters["rope_theta"] == 1e6 and adapter.config.vocab_size == 92544
    # <|im_end|> (92542) ends the chat turn, </s> (2) the sequence, as internlm2_5-7b-chat's tokens are published.
    assert adapter.eos_token_ids == [92542, 2]
    assert adapter.tokenizer.convert_tokens_to_ids(["<s>", "<|im_start|>"]) == [1, 92543]
    # Query head 5 with 4 heads on 2 kv heads (2 per group) is group 1, second query: rows of that block in wqkv,
    # whose per-group layout is [q0, q1, k, v] of head_dim rows each.
    d = source["hidden_size"] // source["num_attention_heads"]
    with safe_open(str(internlm2_dir / "model.safetensors"), framework="pt") as f:
        wqkv = f.get_tensor("model.layers.1.attention.wqkv.weight")
    q_proj = adapter.model.model.layers[1].self_attn.q_proj.weight
    k_proj = adapter.model.model.layers[1].self_attn.k_proj.weight
    group = wqkv[4 * d: 8 * d]  # group 1 = rows 4d..8d
    torch.testing.assert_close(q_proj[3 * d: 4 * d], group[d: 2 * d], rtol=0, atol=0)
    torch.testing.assert_close(k_proj[d: 2 * d], group[2 * d: 3 * d], rtol=0, atol=0)


def test_page_steps_refuse_a_text_only_model(qwen2_dir, passkey_dir, tmp_path, capsys):
    adapter = load_adapter(str(qwen2_dir))
    with pytest.raises(TextOnlyModel, match="text-only language model"):
        adapter.image_inputs(load_samples(passkey_dir)[0].load_pages(), "Q?")
    assert issubclass(TextOnlyModel, UserError)
    argv = ["--model_id", str(qwen2_dir), "--data", str(passkey_dir), "--out", str(tmp_path)]
    capsys.readouterr()  # the loading above logged progress
    assert step2_main("image", argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "step2_text_retrieval_head.py" in err[0]
    assert not (tmp_path / "image").exists() or not any((tmp_path / "image").iterdir())


def test_capture_equals_eager(adapter, passkey_dir):
    check_capture_equals_eager(adapter, passkey_dir, modalities=TEXT)


def test_masking_equals_o_proj_hook(adapter, passkey_dir):
    check_masking_equals_o_proj_hook(adapter, passkey_dir, [(0, 1), (2, 3)], modalities=TEXT)


def test_sink_equals_eager_reference(adapter, passkey_dir):
    # The InternLM2 fixture's weights are drawn in its own layout at unit scale, not transformers' small init: its
    # logits reach ~10 (Qwen2's ~1), and float32 rounding of two summation orders grows with them.
    check_sink_equals_eager_reference(adapter, passkey_dir, {1: [0, 2]}, modalities=TEXT, atol=5e-5)


@pytest.mark.parametrize("family", ["qwen2", "internlm2"])
def test_step1_to_step3(family, request, tmp_path):
    model_dir = request.getfixturevalue(f"{family}_dir")
    check_step1_to_step3(model_dir, tmp_path, 3, 4, modalities=TEXT)


@pytest.mark.parametrize("family", ["qwen2", "internlm2"])
def test_doctor_asks_the_text_and_skips_the_page_rows(family, request):
    from ocr_heads.doctor import run_checks

    checks = {check.name: check for check in run_checks(str(request.getfixturevalue(f"{family}_dir")), {})}
    assert {name: check.status for name, check in checks.items()} == {
        "token ids": "skip", "load": "ok", "protocol": "skip", "chat template": "ok",
        "passkey": "warn",  # random weights: no answer, a warning only
        "capture == eager": "ok"}
    assert "text-only language model" in checks["protocol"].detail
    assert "16 steps x 3 layers x 4 heads agree" in checks["capture == eager"].detail


@pytest.mark.parametrize("command", ["inspect", "look", "case"])
def test_other_page_commands_refuse_before_loading(command, internlm2_dir, passkey_dir, tmp_path, capsys):
    from ocr_heads import inspect, look
    from ocr_heads.pipeline import case_study

    sample = load_samples(passkey_dir)[0]
    argv = {"inspect": (inspect.main, ["--image", str(sample.page_paths[0])]),
            "look": (look.main, ["--data", str(passkey_dir), "--sample", sample.id, "--out", str(tmp_path / "l")]),
            "case": (case_study.main, ["--data", str(tmp_path / "chars"), "--n", "1", "--out", str(tmp_path / "c")])}
    main, extra = argv[command]
    assert main(["--model_id", str(internlm2_dir), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a text-only language model (internlm2)" in err[0]
    assert not (tmp_path / "chars").exists()  # nothing rendered for a model that cannot read it


def test_masking_runs_on_text_datasets_and_refuses_pages(internlm2_dir, passkey_dir, tmp_path, capsys):
    import csv

    from ocr_heads.pipeline.experiment import masking_main

    argv = ["--model_id", str(internlm2_dir), "--task", "text", "--n", "2", "--max_new_tokens", "4"]
    assert masking_main([*argv, "--datasets", "passkey_text", "--data", f"passkey_text={passkey_dir}",
                         "--out", str(tmp_path / "text")]) == 0
    rows = list(csv.DictReader((tmp_path / "text" / "masking.csv").open()))
    assert rows and {row["dataset"] for row in rows} == {"passkey_text"}
    capsys.readouterr()
    assert masking_main([*argv, "--datasets", "passkey", "--data", f"passkey={passkey_dir}",
                         "--out", str(tmp_path / "pages")]) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("error")]
    assert len(err) == 1 and "text-only language model" in err[0]
