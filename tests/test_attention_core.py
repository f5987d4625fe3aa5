"""Selected-row attention probabilities == eager attention computed the plain way in the test."""

import torch

from ocr_heads import attention_core
from ocr_heads.attention import capture
from ocr_heads.attention_core import key_mass, row_probabilities
from ocr_heads.data.samples import load_samples
from ocr_heads.scores.prefill import post_image_rows


def plain_attention(query, key, mask):
    """Eager attention the textbook way: repeat kv heads, scaled dot product, mask, softmax; (b, h, q, k)."""
    groups = query.shape[1] // key.shape[1]
    key = key.repeat_interleave(groups, dim=1)
    scores = query @ key.transpose(-1, -2) / query.shape[-1] ** 0.5
    return (scores + mask).softmax(-1)


def test_row_probabilities_gqa_masks_and_chunks():
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(2, 6, 5, 8, generator=generator)  # batch 2, 6 heads on 2 kv heads, 5 queries
    key = torch.randn(2, 2, 7, 8, generator=generator)  # 7 keys: 2 cached + 5 new
    causal = torch.full((5, 7), float("-inf")).triu(3)  # query i sits at key position i + 2
    rows = [4, 0, 2]
    for sample in (0, 1):
        expected = plain_attention(query, key, causal)[sample][:, rows]
        # No mask: causal from the call's shapes; boolean and additive masks: applied as given.
        torch.testing.assert_close(row_probabilities(query, key, None, rows, None, sample), expected)
        boolean = (causal == 0)[None, None].expand(2, 1, 5, 7)
        torch.testing.assert_close(row_probabilities(query, key, boolean, rows, None, sample), expected)
        torch.testing.assert_close(row_probabilities(query, key, causal[None, None], rows, None, sample), expected)
        # Padding in the mask (sample 1 may not see key 0): the row renormalises over the rest.
        padded = boolean.clone()
        padded[1, :, :, 0] = False
        masked = causal.clone()
        if sample == 1:
            masked[:, 0] = float("-inf")
        torch.testing.assert_close(row_probabilities(query, key, padded, rows, None, sample),
                                   plain_attention(query, key, masked)[sample][:, rows])
    expected = plain_attention(query, key, causal)[0][:, rows][:, :, [1, 5]]
    for chunk in (1, 2, 64):
        torch.testing.assert_close(key_mass(query, key, None, rows, [1, 5], None, chunk=chunk), expected)


def test_key_mass_computes_at_most_a_chunk_of_rows_at_once(monkeypatch):
    seen = []
    original = attention_core.row_probabilities

    def spy(query, key, mask, rows, scaling, sample=0):
        seen.append(len(rows))
        return original(query, key, mask, rows, scaling, sample)

    monkeypatch.setattr(attention_core, "row_probabilities", spy)
    query, key = torch.randn(1, 4, 9, 8), torch.randn(1, 2, 9, 8)
    assert key_mass(query, key, None, list(range(9)), [0, 3], None, chunk=4).shape == (4, 9, 2)
    assert seen == [4, 4, 1]


def test_recorded_prefill_mass_equals_eager(tiny_adapter, passkey_dir):
    """The recorder's prefill key mass during generate == an eager forward's attentions on those rows."""
    sample = load_samples(passkey_dir)[0]
    inputs = tiny_adapter.image_inputs(sample.load_pages(), sample.question)
    rows = post_image_rows(inputs)
    page = inputs.image_tokens[0]
    keys = [0, page.start, page.start + 3, rows[0], inputs.prompt_length - 1]
    with capture(tiny_adapter) as recorder:
        recorder.reset(inputs.prompt_length, mass_rows=rows, mass_keys=keys)
        tiny_adapter.generate(inputs, max_new_tokens=3)
        mass = recorder.key_mass()
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
