"""Selected-row attention probabilities == eager attention computed the plain way in the test."""

import pytest
import torch

from ocr_heads.attention import capture
from ocr_heads.attention import probabilities as attention_core
from ocr_heads.attention.probabilities import attention_logits, attention_probabilities, key_mass
from ocr_heads.attention.probes import PrefillKeyMass
from ocr_heads.data.samples import load_samples
from ocr_heads.scores.registered.prefill import post_image_rows


def plain_attention(query, key, mask):
    """Eager attention the textbook way: repeat kv heads, scaled dot product, add mask, softmax; (b, h, q, k)."""
    groups = query.shape[1] // key.shape[1]
    key = key.repeat_interleave(groups, dim=1)
    scores = query @ key.transpose(-1, -2) / query.shape[-1] ** 0.5
    return (scores + mask).softmax(-1)


def random_qk(q_len=5, k_len=7):
    generator = torch.Generator().manual_seed(0)
    # batch 2, 6 query heads on 2 kv heads
    return torch.randn(2, 6, q_len, 8, generator=generator), torch.randn(2, 2, k_len, 8, generator=generator)


def test_probabilities_gqa_masks_rows_and_heads():
    query, key = random_qk()
    causal = torch.full((5, 7), float("-inf")).triu(3)  # a cache of 2 keys: query i sits at key position i + 2
    expected = plain_attention(query, key, causal)
    rows = [4, 0, 2]
    boolean = (causal == 0)[None, None].expand(2, 1, 5, 7)
    for mask in (boolean, causal[None, None]):  # boolean and additive masks apply as given
        torch.testing.assert_close(attention_probabilities(query, key, mask, rows), expected[:, :, rows])
        torch.testing.assert_close(attention_probabilities(query, key, mask, slice(1, 3)), expected[:, :, 1:3])
        # A subset of heads, in any order: head 5 reads kv head 1, head 0 kv head 0.
        torch.testing.assert_close(attention_probabilities(query, key, mask, rows, heads=[5, 0]),
                                   expected[:, [5, 0]][:, :, rows])
    torch.testing.assert_close(attention_logits(query, key, boolean, rows).softmax(-1), expected[:, :, rows])
    # Padding in the mask (sample 1 may not see key 0): its rows renormalise over the rest.
    padded = boolean.clone()
    padded[1, :, :, 0] = False
    masked = causal.clone().expand(2, 1, 5, 7).clone()
    masked[1, :, :, 0] = float("-inf")
    torch.testing.assert_close(attention_probabilities(query, key, padded, rows),
                               plain_attention(query, key, masked)[:, :, rows])
    # A row that may see nothing (a padding query) is all zeros, not NaN.
    padded[0, :, 2] = False
    assert attention_probabilities(query, key, padded, [2])[0].abs().sum() == 0


def test_probabilities_without_a_mask_follow_sdpa():
    # No mask, several rows: sdpa's causal upper-left alignment (query i sees keys 0..i).
    query, key = random_qk(q_len=4, k_len=6)
    upper_left = torch.full((4, 6), float("-inf")).triu(1)
    torch.testing.assert_close(attention_probabilities(query, key, None), plain_attention(query, key, upper_left))
    # sdpa itself, with the identity as values so that its output is the probabilities.
    identity = torch.eye(6).expand(2, 6, 6, 6)
    sdpa = torch.nn.functional.scaled_dot_product_attention(query, key.repeat_interleave(3, dim=1), identity,
                                                            is_causal=True)
    torch.testing.assert_close(attention_probabilities(query, key, None), sdpa)
    # One row, or a non-causal layer: every key.
    last = query[:, :, -1:]
    torch.testing.assert_close(attention_probabilities(last, key, None), plain_attention(last, key, 0))
    torch.testing.assert_close(attention_probabilities(query, key, None, causal=False), plain_attention(query, key, 0))


def test_key_mass_in_chunks(monkeypatch):
    query, key = random_qk()
    causal = torch.full((5, 7), float("-inf")).triu(3)[None, None]
    rows = [4, 0, 2]
    expected = plain_attention(query, key, causal)[:, :, rows][..., [1, 5]]
    for chunk in (1, 2, 64):
        torch.testing.assert_close(key_mass(query, key, causal, rows, [1, 5], None, chunk=chunk), expected)
    seen = []
    original = attention_core.attention_probabilities

    def spy(query, key, mask, rows, *args):
        seen.append(len(rows))
        return original(query, key, mask, rows, *args)

    monkeypatch.setattr(attention_core, "attention_probabilities", spy)
    assert key_mass(query, key, None, list(range(5)), [0, 3], None, chunk=2).shape == (2, 6, 5, 2)
    assert seen == [2, 2, 1]


def test_recorded_prefill_mass_equals_eager(tiny_adapter, passkey_dir):
    """The recorder's prefill key mass during generate == an eager forward's attentions on those rows."""
    sample = load_samples(passkey_dir)[0]
    inputs = tiny_adapter.image_inputs(sample.load_pages(), sample.question)
    rows = post_image_rows(inputs)
    page = inputs.image_tokens[0]
    keys = [0, page.start, page.start + 3, rows[0], inputs.prompt_length - 1]
    with capture(tiny_adapter) as recorder:
        recorder.reset(inputs.prompt_length, [PrefillKeyMass(rows, keys)])
        tiny_adapter.generate(inputs, max_new_tokens=3)
        mass = recorder.probe_result(PrefillKeyMass).mass
    assert mass.shape == (3, 4, len(rows), len(keys))
    tiny_adapter.set_text_attention("eager")
    try:
        with torch.no_grad():
            attentions = tiny_adapter.model(**inputs.tensors, output_attentions=True).attentions
    finally:
        tiny_adapter.set_text_attention("sdpa")
    for layer, probs in enumerate(attentions):
        expected = probs[0][:, rows][:, :, keys]
        torch.testing.assert_close(mass[layer], expected, atol=1e-6, rtol=1e-5)
    assert mass[:, :, :, -1].abs().max() == 0  # causal: no post-image row sees the last prompt position


def test_two_models_keep_their_own_recorders_and_edits(tiny_adapter, tiny_model_dir, passkey_dir):
    """Recorders and edits belong to the model they were installed on, not to the process."""
    from ocr_heads.attention.edits import mask_heads
    from ocr_heads.models import load_adapter

    other = load_adapter(str(tiny_model_dir))
    sample = load_samples(passkey_dir)[0]
    inputs = tiny_adapter.image_inputs(sample.load_pages(), sample.question)
    plain = other.generate(inputs, max_new_tokens=4)
    with capture(tiny_adapter) as recorder:
        other.set_text_attention("ocr_heads")  # the other model runs the same attention function
        try:
            assert other.generate(inputs, max_new_tokens=4) == plain
            with pytest.raises(RuntimeError, match="nothing was recorded"):
                recorder.result()  # the other model's generate left this recorder alone
            with mask_heads(tiny_adapter, ["l0_h0", "l1_h1", "l2_h2", "l2_h3"]):
                assert other.generate(inputs, max_new_tokens=4) == plain  # ... and this model's edits too
        finally:
            other.set_text_attention("sdpa")
        recorder.reset()
        tiny_adapter.generate(inputs, max_new_tokens=4)
        assert recorder.result().argmax.shape == (4, 3, 4)


def test_recorder_starts_over_at_each_generate(tiny_adapter, passkey_dir):
    first, second = load_samples(passkey_dir)[:2]
    inputs = [tiny_adapter.image_inputs(s.load_pages(), s.question) for s in (first, second)]
    with capture(tiny_adapter) as alone:
        tiny_adapter.generate(inputs[1], max_new_tokens=3)
        expected = alone.result()
    with capture(tiny_adapter) as recorder:
        tiny_adapter.generate(inputs[0], max_new_tokens=5)
        tiny_adapter.generate(inputs[1], max_new_tokens=3)  # no reset: the record is the second generate's
        assert torch.equal(recorder.result().argmax, expected.argmax)
        recorder.reset(inputs[1].prompt_length, [PrefillKeyMass([inputs[1].prompt_length - 2], [0])])
        tiny_adapter.generate(inputs[1], max_new_tokens=2)
        with pytest.raises(RuntimeError, match="rows or padding of the previous prompt"):
            tiny_adapter.generate(inputs[1], max_new_tokens=2)
