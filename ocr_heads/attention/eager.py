"""The reference: eager attention with ``output_attentions``, and the check of recorded argmax against it.
Memory is O(layers x heads x seq^2): for verification on a few samples only."""

from __future__ import annotations

import torch

from ocr_heads.attention.forward import text_attention
from ocr_heads.attention.recorder import StepRecord
from ocr_heads.models.base import ModelAdapter


def eager_attention_rows(adapter: ModelAdapter, inputs, generated: list[int]) -> dict[int, torch.Tensor]:
    """Reference: eager attention with ``output_attentions`` over prompt + generated tokens, one forward.

    Returns, for each layer with attention rows (``adapter.scoreable_layers``), the (heads, steps, keys)
    probabilities of the producing rows P-1 .. P+G-2.
    Memory is O(layers x heads x seq^2): for verification on a few samples only.
    """
    prompt_length = inputs.prompt_length
    tail = torch.tensor([generated[:-1]], dtype=inputs.input_ids.dtype)  # the last token is never an input
    tensors = dict(inputs.tensors)
    tensors["input_ids"] = torch.cat([inputs.input_ids, tail], dim=1)
    tensors["attention_mask"] = torch.ones_like(tensors["input_ids"])
    if "mm_token_type_ids" in tensors:
        tensors["mm_token_type_ids"] = torch.cat(
            [tensors["mm_token_type_ids"], torch.zeros_like(tail, dtype=tensors["mm_token_type_ids"].dtype)], dim=1)
    tensors = {k: v.to(adapter.device) for k, v in tensors.items()}
    with text_attention(adapter, "eager"), torch.no_grad():
        output = adapter.model(**tensors, output_attentions=True, use_cache=False)
    layers = adapter.scoreable_layers
    if len(output.attentions) != len(layers):
        raise RuntimeError(f"eager attention returned {len(output.attentions)} layers of rows, the adapter "
                           f"declares {len(layers)} layers with attention")
    return {layer: rows[0, :, prompt_length - 1 :, :].float().cpu()
            for layer, rows in zip(layers, output.attentions, strict=True)}


# How far two attention probabilities may differ and still count as the same maximum (a tie): float32
# paths agree to rounding; in bf16/fp16 the sdpa and eager kernels round differently, and the
# difference compounds over layers, so only a clear gap in the eager row is a real mismatch.
TIE_TOLERANCE = {torch.float32: (1e-6, 0.0), torch.float64: (1e-9, 0.0),
                 torch.bfloat16: (1e-4, 0.05), torch.float16: (1e-4, 0.02)}


def verify_against_eager(adapter: ModelAdapter, inputs, generated: list[int], record: StepRecord) -> list[str]:
    """Compare recorded argmax with eager attention; returns a description of every real mismatch.

    A differing index counts as a tie (not a mismatch) when eager gives the two positions
    probabilities within the model dtype's tolerance (:data:`TIE_TOLERANCE`: absolute, relative).
    """
    atol, rtol = TIE_TOLERANCE.get(adapter.model.dtype, (1e-6, 0.0))
    prompt_length = record.keys if record.keys is not None else inputs.prompt_length
    mismatches = []
    for layer, probs in eager_attention_rows(adapter, inputs, generated).items():
        steps = min(probs.shape[1], record.argmax.shape[0])
        prompt_probs = probs[:, :steps, :prompt_length]
        reference = prompt_probs.argmax(dim=-1).T  # (steps, heads)
        ours = record.argmax[:steps, layer]
        for step, head in (reference != ours).nonzero().tolist():
            p_ref = float(prompt_probs[head, step, reference[step, head]])
            p_ours = float(prompt_probs[head, step, ours[step, head]])
            if p_ref - p_ours > atol + rtol * p_ref:
                mismatches.append(f"step {step} l{layer}_h{head}: recorded {int(ours[step, head])}, "
                                  f"eager {int(reference[step, head])} ({p_ours:.6g} vs {p_ref:.6g})")
    return mismatches
