"""Capture == eager attention argmax, computed the plain way; capture leaves generation unchanged."""

import pytest
import torch

from ocr_heads.attention import capture, text_attention, verify_against_eager
from ocr_heads.attention.probes import PromptRowArgmax
from ocr_heads.data.samples import load_samples


def plain_eager_attentions(adapter, inputs, generated):
    """Reference computed the authors' way, in the test: one eager forward over prompt + generated tokens
    with output_attentions (the model's own masks, a sliding window included); per layer the rows
    P-1 .. P+G-2, which produced the G generated tokens."""
    tail = torch.tensor([generated[:-1]])
    tensors = dict(inputs.tensors)
    tensors["input_ids"] = torch.cat([inputs.input_ids, tail], dim=1)
    tensors["attention_mask"] = torch.ones_like(tensors["input_ids"])
    tensors["mm_token_type_ids"] = torch.cat([tensors["mm_token_type_ids"], torch.zeros_like(tail).int()], dim=1)
    adapter.set_text_attention("eager")
    try:
        with torch.no_grad():
            attentions = adapter.model(**tensors, output_attentions=True).attentions
    finally:
        adapter.set_text_attention("sdpa")
    return [a[0, :, inputs.prompt_length - 1 :, :] for a in attentions]


def plain_eager_rows(adapter, inputs, generated, layer):
    return plain_eager_attentions(adapter, inputs, generated)[layer]


@pytest.mark.parametrize("modality", ["image", "text"])
def test_capture_argmax_equals_eager(tiny_adapter, passkey_dir, modality):
    for sample in load_samples(passkey_dir)[:3]:
        if modality == "image":
            inputs = tiny_adapter.image_inputs(sample.load_pages(), sample.question)
        else:
            inputs = tiny_adapter.text_inputs(sample.context, sample.question)
        with capture(tiny_adapter) as recorder:
            generated = tiny_adapter.generate(inputs, max_new_tokens=6)
        record = recorder.result()
        assert record.argmax.shape == (6, 3, 4)  # every generated token, the first one included
        P = inputs.prompt_length
        for layer in range(3):
            probs = plain_eager_rows(tiny_adapter, inputs, generated, layer)  # (heads, steps, keys)
            assert torch.equal(record.argmax[:, layer], probs[:, :, :P].argmax(-1).T)
            torch.testing.assert_close(record.sink[:, layer], probs[:, :, 0].T, atol=1e-5, rtol=1e-4)
        assert verify_against_eager(tiny_adapter, inputs, generated, record) == []


def test_capture_does_not_change_generation_and_restores_attention(tiny_adapter, passkey_dir):
    sample = load_samples(passkey_dir)[0]
    inputs = tiny_adapter.image_inputs(sample.load_pages(), sample.question)
    plain = tiny_adapter.generate(inputs, max_new_tokens=8)
    with capture(tiny_adapter):
        captured = tiny_adapter.generate(inputs, max_new_tokens=8)
    assert captured == plain
    config = tiny_adapter.model.config
    assert config.text_config._attn_implementation == "sdpa"
    with pytest.raises(RuntimeError, match="boom"), capture(tiny_adapter):
        raise RuntimeError("boom")
    assert config.text_config._attn_implementation == "sdpa"
    assert config.vision_config._attn_implementation == "sdpa"
    with text_attention(tiny_adapter, "eager"):
        assert config.vision_config._attn_implementation == "sdpa"  # the vision tower is never touched


def test_prompt_rows_match_eager(tiny_adapter, passkey_dir):
    sample = load_samples(passkey_dir)[1]
    inputs = tiny_adapter.text_inputs(sample.context, sample.question)
    rows = [5, 17, inputs.prompt_length - 3]
    with capture(tiny_adapter) as recorder:
        recorder.reset(inputs.prompt_length, [PromptRowArgmax(rows)])
        generated = tiny_adapter.generate(inputs, max_new_tokens=2)
    ours = recorder.probe_result(PromptRowArgmax).by_row
    full = dict(inputs.tensors)
    with text_attention(tiny_adapter, "eager"), torch.no_grad():
        attentions = tiny_adapter.model(**full, output_attentions=True).attentions
    for position in rows:
        reference = torch.stack([a[0, :, position, :].argmax(-1) for a in attentions])  # (layers, heads)
        assert torch.equal(ours[position], reference)
    assert len(generated) == 2


def test_verify_reports_real_mismatches(tiny_adapter, passkey_dir):
    sample = load_samples(passkey_dir)[0]
    inputs = tiny_adapter.text_inputs(sample.context, sample.question)
    with capture(tiny_adapter) as recorder:
        generated = tiny_adapter.generate(inputs, max_new_tokens=3)
    record = recorder.result()
    record.argmax[1, 2, 3] = (record.argmax[1, 2, 3] + 7) % inputs.prompt_length  # corrupt one entry
    mismatches = verify_against_eager(tiny_adapter, inputs, generated, record)
    assert len(mismatches) == 1 and "l2_h3" in mismatches[0]


def test_capture_without_the_last_prompt_position_equals_eager(tiny_adapter, passkey_dir):
    """--alignment authors: the argmax over prompt positions [0, P-1), checked against eager."""
    sample = load_samples(passkey_dir)[0]
    inputs = tiny_adapter.image_inputs(sample.load_pages(), sample.question)
    P = inputs.prompt_length
    with capture(tiny_adapter) as recorder:
        recorder.reset(P, exclude_last_prompt=True)
        generated = tiny_adapter.generate(inputs, max_new_tokens=4)
    record = recorder.result()
    assert record.keys == P - 1
    for layer in range(3):
        probs = plain_eager_rows(tiny_adapter, inputs, generated, layer)
        assert torch.equal(record.argmax[:, layer], probs[:, :, : P - 1].argmax(-1).T)
    assert verify_against_eager(tiny_adapter, inputs, generated, record) == []
