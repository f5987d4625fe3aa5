"""Head masking and sink redistribution against references written out by hand in the tests."""

from types import SimpleNamespace

import pytest
import torch
from transformers import AttentionInterface

from ocr_heads.attention import capture, text_attention
from ocr_heads.attention.edits import (
    SinkRedistribution,
    mask_heads,
    redistribute_sink,
    redistribute_sink_heads,
    sink_probabilities,
)
from ocr_heads.data.samples import load_samples

# ---------------------------------------------------------------- helpers


def prompt_inputs(adapter, passkey_dir, index=0, modality="image"):
    sample = load_samples(passkey_dir)[index]
    if modality == "image":
        return adapter.image_inputs(sample.load_pages(), sample.question)
    return adapter.text_inputs(sample.context, sample.question)


def logits(adapter, inputs):
    with torch.no_grad():
        return adapter.model(**inputs.tensors).logits


def greedy_with_scores(adapter, inputs, steps=5):
    with torch.no_grad():
        out = adapter.model.generate(**inputs.tensors, max_new_tokens=steps, do_sample=False, num_beams=1,
                                     temperature=None, top_p=None, top_k=None,
                                     output_logits=True, return_dict_in_generate=True)
    return out.sequences[0, inputs.prompt_length :].tolist(), torch.cat(out.logits)


def full_sequence_inputs(inputs, generated):
    """Prompt + generated[:-1] as one input, for a single no-cache forward."""
    tail = torch.tensor([generated[:-1]])
    tensors = dict(inputs.tensors)
    tensors["input_ids"] = torch.cat([inputs.input_ids, tail], dim=1)
    tensors["attention_mask"] = torch.ones_like(tensors["input_ids"])
    tensors["mm_token_type_ids"] = torch.cat([tensors["mm_token_type_ids"], torch.zeros_like(tail).int()], dim=1)
    return tensors


def o_proj_zeroing_hooks(adapter, layer, head):
    """Reference masking: zero the head's slice of the o_proj input with a forward pre-hook."""
    d = adapter.shape.head_dim

    def hook(module, args):
        (hidden,) = args
        hidden = hidden.clone()
        hidden[..., head * d : (head + 1) * d] = 0
        return (hidden,)

    return adapter.attention_modules()[layer].o_proj.register_forward_pre_hook(hook)


REFERENCE = "test_eager_sink_reference"
REFERENCE_HEADS: dict[int, list[int]] = {}
REFERENCE_BETA = [0.4]


def eager_sink_reference(module, query, key, value, attention_mask, scaling=None, **kwargs):
    """Plain eager attention for every head, causal mask from torch.tril (no cache: q_len == k_len),
    then for the chosen heads the sink edit written out row by row."""
    groups = query.shape[1] // key.shape[1]
    k = key.repeat_interleave(groups, dim=1)
    v = value.repeat_interleave(groups, dim=1)
    scores = query @ k.transpose(-1, -2) * scaling
    q_len, k_len = scores.shape[-2:]
    assert q_len == k_len, "the reference runs without a cache"
    causal = torch.tril(torch.ones(q_len, k_len, dtype=torch.bool))
    probs = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
    beta = REFERENCE_BETA[0]
    for head in REFERENCE_HEADS.get(module.layer_idx, []):
        for row in range(1, q_len):  # row 0 sees only the sink: nowhere to move its mass
            p = probs[0, head, row].clone()
            p0, others = p[0], p[1 : row + 1]
            probs[0, head, row, 0] = beta * p0
            probs[0, head, row, 1 : row + 1] = others + (1 - beta) * p0 * others / others.sum()
    return (probs @ v).transpose(1, 2).contiguous(), probs


AttentionInterface.register(REFERENCE, eager_sink_reference)


def reference_logits(adapter, tensors, by_layer, beta):
    REFERENCE_HEADS.clear()
    REFERENCE_HEADS.update(by_layer)
    REFERENCE_BETA[0] = beta
    with text_attention(adapter, REFERENCE), torch.no_grad():
        return adapter.model(**tensors, use_cache=False).logits


# ---------------------------------------------------------------- redistribute_sink (pure)


def test_redistribute_sink_by_hand():
    probs = torch.tensor([0.5, 0.3, 0.2, 0.0])
    out = redistribute_sink(probs, 0.4)
    # 0.3 of mass moves: 0.6 and 0.4 of it to keys 1 and 2, nothing to the zero key.
    torch.testing.assert_close(out, torch.tensor([0.2, 0.48, 0.32, 0.0]))
    assert torch.equal(probs, torch.tensor([0.5, 0.3, 0.2, 0.0]))  # input untouched
    torch.testing.assert_close(redistribute_sink(probs, 1.0), probs)
    torch.testing.assert_close(redistribute_sink(probs, 0.0), torch.tensor([0.0, 0.6, 0.4, 0.0]))


def test_redistribute_sink_rows_sum_to_one_and_edge_rows():
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(3, 5, 7, 11) * 3, dim=-1)
    out = redistribute_sink(probs, 0.4)
    torch.testing.assert_close(out.sum(-1), torch.ones(3, 5, 7))
    torch.testing.assert_close(out[..., 0], 0.4 * probs[..., 0])
    ratio = out[..., 1:] / probs[..., 1:]  # every other key scaled by the same factor within a row
    torch.testing.assert_close(ratio, ratio[..., :1].expand_as(ratio))
    # All other keys at 0: uniform over them, or over the allowed ones only; none allowed: unchanged.
    sink_only = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(redistribute_sink(sink_only, 0.4), torch.tensor([[0.4, 0.2, 0.2, 0.2]]))
    allowed = torch.tensor([[True, True, False, False]])
    torch.testing.assert_close(redistribute_sink(sink_only, 0.4, allowed), torch.tensor([[0.4, 0.6, 0.0, 0.0]]))
    only_sink = torch.tensor([[True, False, False, False]])
    assert torch.equal(redistribute_sink(sink_only, 0.4, only_sink), sink_only)
    with pytest.raises(ValueError, match="beta"):
        redistribute_sink(probs, 1.5)


def test_sink_probabilities_mask_equals_causal_and_rows_sum_to_one():
    torch.manual_seed(1)
    module = SimpleNamespace(layer_idx=0, is_causal=True)
    query, key = torch.randn(1, 4, 6, 8), torch.randn(1, 2, 6, 8)
    causal = torch.tril(torch.ones(6, 6, dtype=torch.bool))[None, None]
    with_none = sink_probabilities(module, query, key, None, [1, 3], 0.4)
    with_mask = sink_probabilities(module, query, key, causal, [1, 3], 0.4)
    torch.testing.assert_close(with_none, with_mask)
    torch.testing.assert_close(with_none.sum(-1), torch.ones(1, 2, 6))
    assert torch.all(with_none.masked_fill(causal, 0) == 0)  # nothing leaks to future keys
    # A decode step (one query) sees every key.
    last = sink_probabilities(module, query[:, :, -1:], key, None, [1, 3], 0.4)
    torch.testing.assert_close(last, with_none[:, :, -1:])


# ---------------------------------------------------------------- masking on the tiny model


def test_masking_nothing_is_bit_identical(tiny_adapter, passkey_dir):
    inputs = prompt_inputs(tiny_adapter, passkey_dir)
    plain = logits(tiny_adapter, inputs)
    with mask_heads(tiny_adapter, []):
        masked = logits(tiny_adapter, inputs)
    assert torch.equal(plain, masked)


@pytest.mark.parametrize("modality", ["image", "text"])
def test_masking_equals_zeroing_o_proj_input(tiny_adapter, passkey_dir, modality):
    inputs = prompt_inputs(tiny_adapter, passkey_dir, 1, modality)
    heads = [(1, 2), (2, 0)]
    hooks = [o_proj_zeroing_hooks(tiny_adapter, layer, head) for layer, head in heads]
    try:
        reference = logits(tiny_adapter, inputs)
        reference_tokens, reference_scores = greedy_with_scores(tiny_adapter, inputs)
    finally:
        for hook in hooks:
            hook.remove()
    with mask_heads(tiny_adapter, [f"l{layer}_h{head}" for layer, head in heads]):
        masked = logits(tiny_adapter, inputs)
        tokens, scores = greedy_with_scores(tiny_adapter, inputs)  # prefill + decode steps
    assert torch.equal(masked, reference)
    assert tokens == reference_tokens
    torch.testing.assert_close(scores, reference_scores, rtol=0, atol=1e-6)
    assert not torch.equal(masked, logits(tiny_adapter, inputs))  # the heads mattered


def test_masking_restores_model_even_on_exception(tiny_adapter, passkey_dir):
    inputs = prompt_inputs(tiny_adapter, passkey_dir)
    before = logits(tiny_adapter, inputs)
    with pytest.raises(RuntimeError, match="boom"), mask_heads(tiny_adapter, ["l0_h1"]):
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"), redistribute_sink_heads(tiny_adapter, ["l0_h1"], 0.2):
        raise RuntimeError("boom")
    assert tiny_adapter.model.config.text_config._attn_implementation == "sdpa"
    assert torch.equal(logits(tiny_adapter, inputs), before)


def test_unknown_heads_are_rejected(tiny_adapter):
    with pytest.raises(ValueError, match="does not exist"), mask_heads(tiny_adapter, ["l9_h0"]):
        pass
    with pytest.raises(ValueError, match="not a head name"), redistribute_sink_heads(tiny_adapter, ["layer1"]):
        pass
    assert tiny_adapter.model.config.text_config._attn_implementation == "sdpa"


def test_masking_combines_with_capture(tiny_adapter, passkey_dir):
    inputs = prompt_inputs(tiny_adapter, passkey_dir)
    with mask_heads(tiny_adapter, ["l1_h1"]):
        alone = tiny_adapter.generate(inputs, max_new_tokens=5)
    with capture(tiny_adapter) as recorder, mask_heads(tiny_adapter, ["l1_h1"]):
        recorder.reset(inputs.prompt_length)
        both = tiny_adapter.generate(inputs, max_new_tokens=5)
    assert both == alone
    assert recorder.result().argmax.shape == (5, 3, 4)
    assert tiny_adapter.model.config.text_config._attn_implementation == "sdpa"


# ---------------------------------------------------------------- sink redistribution on the tiny model


@pytest.mark.parametrize("modality", ["image", "text"])
def test_sink_redistribution_equals_eager_reference(tiny_adapter, passkey_dir, modality):
    inputs = prompt_inputs(tiny_adapter, passkey_dir, 2, modality)
    heads, by_layer, beta = ["l0_h1", "l2_h3", "l2_h0"], {0: [1], 2: [3, 0]}, 0.3
    # Prefill (q_len > 1, no mask: must be causal) on the whole prompt.
    with redistribute_sink_heads(tiny_adapter, heads, beta):
        ours = logits(tiny_adapter, inputs)
        generated, step_scores = greedy_with_scores(tiny_adapter, inputs, steps=5)
    reference = reference_logits(tiny_adapter, inputs.tensors, by_layer, beta)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)
    # Decode steps with a KV cache equal one no-cache forward over prompt + generated tokens.
    full = reference_logits(tiny_adapter, full_sequence_inputs(inputs, generated), by_layer, beta)
    torch.testing.assert_close(step_scores, full[0, inputs.prompt_length - 1 :], rtol=0, atol=1e-5)
    assert not torch.allclose(ours, logits(tiny_adapter, inputs), atol=1e-5)  # the edit did something
    assert tiny_adapter.model.config.text_config._attn_implementation == "sdpa"


def test_sink_beta_one_changes_nothing_and_other_heads_keep_sdpa(tiny_adapter, passkey_dir):
    inputs = prompt_inputs(tiny_adapter, passkey_dir)
    plain = logits(tiny_adapter, inputs)
    with redistribute_sink_heads(tiny_adapter, ["l1_h2"], beta=1.0):
        same = logits(tiny_adapter, inputs)
    torch.testing.assert_close(same, plain, rtol=0, atol=1e-5)
    # Direct call: only the selected head's slice changes.
    torch.manual_seed(2)
    module = SimpleNamespace(layer_idx=1, is_causal=True)
    query, key, value = torch.randn(1, 4, 5, 16), torch.randn(1, 2, 5, 16), torch.randn(1, 2, 5, 16)
    output = torch.randn(1, 5, 4, 16)
    edited = SinkRedistribution({1: [2]}, 0.4)(module, query, key, value, None, output, scaling=0.25)
    assert torch.equal(edited[:, :, [0, 1, 3]], output[:, :, [0, 1, 3]])
    assert not torch.allclose(edited[:, :, 2], output[:, :, 2])


def test_sink_combines_with_capture(tiny_adapter, passkey_dir):
    inputs = prompt_inputs(tiny_adapter, passkey_dir)
    with redistribute_sink_heads(tiny_adapter, ["l2_h1"], 0.4):
        alone = tiny_adapter.generate(inputs, max_new_tokens=4)
    with redistribute_sink_heads(tiny_adapter, ["l2_h1"], 0.4), capture(tiny_adapter) as recorder:
        recorder.reset(inputs.prompt_length)
        both = tiny_adapter.generate(inputs, max_new_tokens=4)
    assert both == alone
    assert recorder.result().sink.shape == (4, 3, 4)
