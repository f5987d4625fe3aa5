"""Sliding windows and softcapping: exact where the recomputed rows can be exact, a clear refusal elsewhere."""

import json
import shutil

import pytest
import torch
from test_attention import plain_eager_attentions

from ocr_heads.attention import IMPLEMENTATION, capture, verify_against_eager
from ocr_heads.attention.edits import redistribute_sink_heads
from ocr_heads.attention.probes import PromptRowArgmax
from ocr_heads.data.samples import load_samples
from ocr_heads.models import load_adapter


def _sliding_copy(src, dst, window: int):
    """The tiny Qwen2-VL with layers 1 and 2 turned into sliding-window layers (Qwen2's own config keys)."""
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    config["text_config"].update(use_sliding_window=True, sliding_window=window, max_window_layers=1,
                                 layer_types=["full_attention", "sliding_attention", "sliding_attention"])
    (dst / "config.json").write_text(json.dumps(config))
    return load_adapter(str(dst))


def test_sliding_window_wider_than_the_input_records_exactly(tiny_model_dir, passkey_dir, tmp_path):
    adapter = _sliding_copy(tiny_model_dir, tmp_path / "sliding", window=4096)
    assert adapter.model.model.language_model.layers[1].self_attn.sliding_window == 4096
    sample = load_samples(passkey_dir)[0]
    inputs = adapter.image_inputs(sample.load_pages(), sample.question)
    P = inputs.prompt_length
    with capture(adapter) as recorder:
        generated = adapter.generate(inputs, max_new_tokens=4)
    record = recorder.result()
    for layer, probs in enumerate(plain_eager_attentions(adapter, inputs, generated)):
        assert torch.equal(record.argmax[:, layer], probs[:, :, :P].argmax(-1).T)
    assert verify_against_eager(adapter, inputs, generated, record) == []


def test_binding_sliding_window_capture_is_exact_and_sink_edit_refused(tiny_model_dir, passkey_dir, tmp_path):
    adapter = _sliding_copy(tiny_model_dir, tmp_path / "sliding8", window=8)
    sample = load_samples(passkey_dir)[0]
    inputs = adapter.text_inputs(sample.context, sample.question)
    P = inputs.prompt_length
    # Capture maps the window's cached keys back to prompt positions: equal to the model's own eager rows.
    with capture(adapter) as recorder:
        generated = adapter.generate(inputs, max_new_tokens=4)
    record = recorder.result()
    for layer, probs in enumerate(plain_eager_attentions(adapter, inputs, generated)):
        assert torch.equal(record.argmax[:, layer], probs[:, :, :P].argmax(-1).T)
    # The authors' text rule recomputes prompt rows as positions: refused under a binding window.
    with pytest.raises(ValueError, match=r"layer 1: sliding-window attention \(window 8\)"), \
            capture(adapter) as recorder:
        recorder.reset(P, [PromptRowArgmax([P - 2])])
        adapter.generate(inputs, max_new_tokens=2)
    with pytest.raises(ValueError, match=r"layer 2: sliding-window attention"), \
            redistribute_sink_heads(adapter, ["l2_h0"]):
        adapter.generate(inputs, max_new_tokens=2)
    # Plain generation (and full-attention layers under the sink edit) are not affected.
    with redistribute_sink_heads(adapter, ["l0_h0"]):
        assert len(adapter.generate(inputs, max_new_tokens=2)) == 2


def test_softcapping_is_refused_naming_the_model_and_layer():
    from transformers import Gemma2Config, Gemma2ForCausalLM

    config = Gemma2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=2, num_key_value_heads=1, head_dim=16, attn_logit_softcapping=50.0,
                          sliding_window=4096)
    model = Gemma2ForCausalLM(config).eval()
    model.set_attn_implementation(IMPLEMENTATION)
    with pytest.raises(ValueError, match=r"gemma2 layer 0: attention logit softcapping \(softcap=50.0\)"), \
            torch.no_grad():
        model(input_ids=torch.tensor([[1, 2, 3, 4]]))
