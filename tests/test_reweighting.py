"""Attention reweighting (block, keep, scale, redirect) against references written out by hand here.

The pure rule is checked on rows worked out by hand, edge cases included. On every family's tiny model, the
edit (sdpa + recomputed rows, with a KV cache: prefill, then decode) is compared with a hand-written eager
computation without a cache: transformers' eager mask added to ``q k^T * scaling``, softmax, the edit applied
row by row with plain Python sets, times V, o_proj. A left-padded batch of prompts of different lengths must
give each prompt's numbers alone. Random tiny models have no OCR heads: these check arithmetic, not findings.
"""

from __future__ import annotations

import pytest
import torch
from family_battery import with_generated
from test_interventions import prompt_inputs
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

from ocr_heads.attention import text_attention
from ocr_heads.attention.edits import redistribute_sink
from ocr_heads.attention.reweighting import KeySet, Reweight, Rows, reweight_probabilities, reweighted_heads
from ocr_heads.models import load_adapter
from ocr_heads.models.base import collate

FAMILIES = ["gemma3", "idefics3", "internvl", "llava_onevision", "qwen2_5_vl", "qwen2_vl", "qwen3_5", "qwen3_vl",
            "qwen3_vl_moe", "smolvlm"]

# ---------------------------------------------------------------- the pure rule, by hand

P = torch.tensor([0.1, 0.2, 0.3, 0.4])
S = torch.tensor([False, True, True, False])


def test_block_keep_scale_by_hand():
    torch.testing.assert_close(reweight_probabilities(P, S, Reweight("block")), torch.tensor([0.2, 0, 0, 0.8]))
    torch.testing.assert_close(reweight_probabilities(P, S, Reweight("keep")), torch.tensor([0, 0.4, 0.6, 0]))
    # scale by 2: [0.1, 0.4, 0.6, 0.4] / 1.5
    torch.testing.assert_close(reweight_probabilities(P, S, Reweight("scale", factor=2.0)),
                               torch.tensor([0.1, 0.4, 0.6, 0.4]) / 1.5)
    torch.testing.assert_close(reweight_probabilities(P, S, Reweight("scale", factor=0.0)),
                               reweight_probabilities(P, S, Reweight("block")))
    torch.testing.assert_close(reweight_probabilities(P, S, Reweight("scale", factor=1.0)), P)


def test_redirect_by_hand():
    target = torch.tensor([False, False, False, True])
    # 0.5 of S's mass 0.5 (0.25) moves to key 3; S keeps half of each probability.
    torch.testing.assert_close(reweight_probabilities(P, S, Reweight("redirect", alpha=0.5), target),
                               torch.tensor([0.1, 0.1, 0.15, 0.65]))
    # Without a target: onto keys 0 and 3 in proportion 0.1 : 0.4, or evenly.
    torch.testing.assert_close(reweight_probabilities(P, S, Reweight("redirect", alpha=1.0)),
                               torch.tensor([0.2, 0, 0, 0.8]))
    torch.testing.assert_close(reweight_probabilities(P, S, Reweight("redirect", alpha=1.0, spread="uniform")),
                               torch.tensor([0.35, 0, 0, 0.65]))
    torch.testing.assert_close(reweight_probabilities(P, S, Reweight("redirect", alpha=0.0)), P)
    # A key in both sets counts as source: target {2, 3} -> only key 3 receives.
    both = torch.tensor([False, False, True, True])
    torch.testing.assert_close(reweight_probabilities(P, S, Reweight("redirect", alpha=0.5), both),
                               torch.tensor([0.1, 0.1, 0.15, 0.65]))


def test_edge_rows_are_defined():
    allowed = torch.tensor([False, True, True, False])  # the row sees only the set
    assert torch.equal(reweight_probabilities(torch.tensor([0, 0.5, 0.5, 0]), S, Reweight("block"), allowed=allowed),
                       torch.zeros(4))  # nothing left to attend to: the head outputs 0 on this row
    # Kept keys visible but at probability 0 (underflow): even over them, never onto invisible keys.
    row = torch.tensor([0.0, 0.5, 0.5, 0.0])
    sees = torch.tensor([True, True, True, False])
    torch.testing.assert_close(reweight_probabilities(row, S, Reweight("block"), allowed=sees),
                               torch.tensor([1.0, 0, 0, 0]))
    # Redirect to a target the row cannot see yet: unchanged.
    later = torch.tensor([False, False, False, True])
    assert torch.equal(reweight_probabilities(row, S, Reweight("redirect", alpha=0.7), later, sees), row)
    # A visible target at probability 0 receives the moved mass evenly, proportional or not.
    torch.testing.assert_close(reweight_probabilities(row, S, Reweight("redirect", alpha=0.5), allowed=sees),
                               torch.tensor([0.5, 0.25, 0.25, 0]))
    with pytest.raises(ValueError, match="mode"):
        Reweight("swap")
    with pytest.raises(ValueError, match="alpha"):
        Reweight("redirect", alpha=1.5)
    with pytest.raises(ValueError, match="factor"):
        Reweight("scale", factor=-1.0)


def test_sink_redistribution_is_a_redirect_from_key_0():
    probs = torch.softmax(torch.randn(3, 5, 7, generator=torch.Generator().manual_seed(0)), dim=-1)
    sink = torch.zeros(7, dtype=torch.bool)
    sink[0] = True
    torch.testing.assert_close(redistribute_sink(probs, 0.3),
                               reweight_probabilities(probs, sink, Reweight("redirect", alpha=0.7)))


def test_key_set_maps_own_positions_past_left_padding():
    pads = torch.tensor([0, 3])
    mask = KeySet.of_samples([[0, 2], [0, 2, 9]]).mask(pads, 6)[:, 0, 0]
    assert mask.tolist() == [[True, False, True, False, False, False], [False, False, False, True, False, True]]
    with pytest.raises(ValueError, match="holds 2 sample"):
        KeySet.of_samples([[0], [1]]).mask(torch.tensor([0]), 4)


# ---------------------------------------------------------------- the hand-written eager reference

REFERENCE = "test_reweighting_reference"
CASE: dict = {}


def edit_rows(p: torch.Tensor, visible: torch.Tensor, case: dict) -> torch.Tensor:
    """Rows ``p`` (rows, keys) edited as the module docstring defines, written out on whole rows: ``visible``
    (rows, keys) from the eager mask, the sets from the case's plain position lists."""
    n = p.shape[-1]
    in_set = torch.zeros(n, dtype=torch.bool)
    in_set[[k for k in case["keys"] if k < n]] = True
    edit = case["edit"]
    if edit.mode in ("block", "keep"):
        kept = (in_set if edit.mode == "keep" else ~in_set) & visible
        total = (p * kept).sum(-1, keepdim=True)
        return torch.where(total > 0, p * kept / total, torch.zeros_like(p))  # nothing kept: the row is 0
    if edit.mode == "scale":
        weighted = torch.where(in_set, p * edit.factor, p)
        return weighted / weighted.sum(-1, keepdim=True)
    goal = torch.ones(n, dtype=torch.bool) if case["target"] is None else torch.zeros(n, dtype=torch.bool)
    if case["target"] is not None:
        goal[[k for k in case["target"] if k < n]] = True
    goal = goal & ~in_set & visible
    moved = edit.alpha * (p * (in_set & visible)).sum(-1, keepdim=True)
    if edit.spread == "proportional":
        share = p * goal / (p * goal).sum(-1, keepdim=True)
    else:
        share = goal / goal.sum(-1, keepdim=True)
    new = torch.where(in_set, p * (1 - edit.alpha), p) + moved * share
    return torch.where(goal.any(-1, keepdim=True), new, p)  # no target in sight yet: unchanged


def edited_rows(q_len: int, prompt: int, rows: Rows) -> range:
    """The rows of a cache-free forward over prompt + generated tokens that the edit changes in a cached run."""
    return {Rows.ALL: range(q_len), Rows.PREFILL: range(min(prompt, q_len)), Rows.DECODE: range(prompt, q_len),
            Rows.PRODUCING: range(prompt - 1, q_len)}[rows]


def reference_attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
    """Eager attention (transformers' float mask added to the logits, no cache), the chosen heads' rows edited."""
    groups = query.shape[1] // key.shape[1]
    k, v = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    scores = (query @ k.transpose(-1, -2)).float() * scaling
    q_len = scores.shape[-2]
    if attention_mask is not None:
        scores = scores + attention_mask[:, :, :, : k.shape[2]].float()
    else:
        scores = scores.masked_fill(~torch.tril(torch.ones(q_len, q_len, dtype=torch.bool)), float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    rows = list(edited_rows(q_len, CASE["prompt"], CASE["rows"]))
    visible = scores[0, 0, rows] > float("-inf") if attention_mask is None else \
        attention_mask[0, 0, rows, : k.shape[2]] > torch.finfo(attention_mask.dtype).min
    for head in CASE["by_layer"].get(module.layer_idx, []):
        probs[0, head, rows] = edit_rows(probs[0, head, rows], visible, CASE)
    return (probs.to(v.dtype) @ v).transpose(1, 2).contiguous(), probs


AttentionInterface.register(REFERENCE, reference_attention)
AttentionMaskInterface.register(REFERENCE, eager_mask)


def cases(inputs) -> list[tuple[Reweight, list[int], list[int] | None, Rows]]:
    """Every mode and row choice once, over image keys, part of them, the question and a generated position."""
    image = [p for tokens in inputs.image_tokens for p in tokens.positions]
    prompt = inputs.prompt_length
    text = [p for p in range(prompt) if p not in set(image)]
    half = len(image) // 2
    return [
        (Reweight("block"), image, None, Rows.ALL),
        (Reweight("keep"), [0, *image, prompt + 1], None, Rows.DECODE),  # a generated key, visible in decode only
        (Reweight("scale", factor=3.0), text[1:], None, Rows.PREFILL),
        (Reweight("redirect", alpha=0.8), image[:half], image[half:], Rows.PRODUCING),
        (Reweight("redirect", alpha=0.6, spread="uniform"), text, image, Rows.ALL),
    ]


def heads_for(adapter) -> dict[int, list[int]]:
    layers = adapter.scoreable_layers
    heads = adapter.shape.num_heads
    return {layers[0]: [heads - 1], layers[-1]: [0, heads // 2]}


@pytest.fixture(scope="module")
def family_adapter(family_dir):
    loaded = {}

    def get(family: str):
        if family not in loaded:
            loaded[family] = load_adapter(str(family_dir(family)))
        return loaded[family]

    return get


@pytest.mark.parametrize("family", FAMILIES)
def test_every_mode_equals_the_eager_reference(family, family_adapter, passkey_dir):
    adapter = family_adapter(family)
    by_layer = heads_for(adapter)
    names = [f"l{layer}_h{head}" for layer, hs in by_layer.items() for head in hs]
    inputs = prompt_inputs(adapter, passkey_dir, 2, "image")
    prompt = inputs.prompt_length
    with torch.no_grad():
        plain = adapter.model(**inputs.tensors).logits
    for edit, keys, target, rows in cases(inputs):
        with reweighted_heads(adapter, names, edit, KeySet.shared(keys),
                              None if target is None else KeySet.shared(target), rows), torch.no_grad():
            prefill = adapter.model(**inputs.tensors).logits
            out = adapter.model.generate(**inputs.tensors, max_new_tokens=4, do_sample=False, num_beams=1,
                                         temperature=None, top_p=None, top_k=None, output_logits=True,
                                         return_dict_in_generate=True, use_cache=True)
        generated = out.sequences[0, prompt:].tolist()
        CASE.update(by_layer=by_layer, keys=keys, target=target, edit=edit, rows=rows, prompt=prompt)
        with text_attention(adapter, REFERENCE), torch.no_grad():
            expected = adapter.model(**inputs.tensors, use_cache=False).logits
            full = adapter.model(**with_generated(inputs, generated), use_cache=False).logits
        what = f"{family} {edit} {rows}"
        torch.testing.assert_close(prefill, expected, rtol=0, atol=1e-5, msg=what)
        decoded = torch.cat(out.logits)
        torch.testing.assert_close(decoded, full[0, prompt - 1 : prompt - 1 + len(decoded)], rtol=0, atol=1e-5,
                                   msg=what)
        if rows is not Rows.DECODE:
            assert not torch.allclose(prefill, plain, atol=1e-5), f"{what} changed nothing"
    assert adapter.model.config.get_text_config()._attn_implementation == "sdpa"


# Two families that generate_batch collates (Gemma 3's token_type_ids are not batched); tiny inputs keep it cheap.
@pytest.mark.parametrize("family", ["qwen2_vl", "internvl"])
def test_a_left_padded_batch_equals_each_sample_alone(family, family_adapter, passkey_dir):
    """Per-sample key sets of prompts of different lengths: batched prefill and decode logits == each alone."""
    adapter = family_adapter(family)
    names = [f"l{layer}_h{head}" for layer, hs in heads_for(adapter).items() for head in hs]
    batch = [prompt_inputs(adapter, passkey_dir, index, "image") for index in (0, 3)]
    assert batch[0].prompt_length != batch[1].prompt_length
    own = [cases(inputs) for inputs in batch]
    for number in range(len(own[0])):
        edit, _, _, rows = own[0][number]
        keys = KeySet.of_samples([own[i][number][1] for i in range(2)])
        targets = [own[i][number][2] for i in range(2)]
        target = None if targets[0] is None else KeySet.of_samples(targets)
        alone = []
        with reweighted_heads(adapter, names, edit, rows=rows) as reweighting, torch.no_grad():
            for i, inputs in enumerate(batch):
                reweighting.set_keys(KeySet.of_samples([keys.per_sample[i]]),
                                     None if target is None else KeySet.of_samples([target.per_sample[i]]))
                alone.append(generate_logits(adapter, inputs.tensors))
            reweighting.set_keys(keys, target)
            together = generate_logits(adapter, collate(batch, adapter.pad_token_id))
        for i in range(2):
            steps = len(alone[i])
            torch.testing.assert_close(together[i, :steps], alone[i], rtol=0, atol=1e-5, msg=f"{family} {edit} {i}")


def generate_logits(adapter, tensors) -> torch.Tensor:
    out = adapter.model.generate(**tensors, max_new_tokens=3, do_sample=False, num_beams=1, temperature=None,
                                 top_p=None, top_k=None, output_logits=True, return_dict_in_generate=True,
                                 pad_token_id=adapter.pad_token_id, use_cache=True)
    logits = torch.stack(out.logits, dim=1)  # (batch, steps, vocab)
    return logits if logits.shape[0] > 1 else logits[0]
