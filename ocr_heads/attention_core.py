"""Attention probabilities of selected query rows, recomputed from one attention call's inputs.

The attention function registered in :mod:`ocr_heads.attention` sees ``query`` (batch, heads, q_len,
dim), ``key`` (batch, kv_heads, k_len, dim) and the layer's mask; sdpa computes the output but never
exposes probabilities. Scores that need probabilities of a few rows recompute them here, the way
eager attention does:

- GQA: query head ``h`` reads kv head ``h // groups`` (transformers' ``repeat_kv``), computed by
  reshaping the query into (kv_heads, groups, ...) so keys are never copied;
- scaling: the layer's ``scaling`` (default ``head_dim ** -0.5``);
- mask: the layer's mask rows when given (boolean: True = may attend; float: added to the logits),
  else causal: query index ``i`` of this call sits at key position ``i + k_len - q_len``.

Rows are processed in chunks, so memory is O(heads x chunk x keys) per call, never q_len x k_len
for every row.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

DEFAULT_CHUNK = 64


def row_logits(
    query: torch.Tensor,
    key: torch.Tensor,
    attention_mask: torch.Tensor | None,
    rows: Sequence[int],
    scaling: float | None,
    sample: int = 0,
) -> torch.Tensor:
    """Masked logits of query rows ``rows`` (indices into this call's queries) of batch item ``sample``;
    (heads, len(rows), keys), float32, masked keys at -inf."""
    kv_heads, num_keys, dim = key.shape[1], key.shape[2], query.shape[-1]
    scale = scaling if scaling is not None else dim**-0.5
    index = torch.as_tensor(list(rows), device=query.device, dtype=torch.long)
    selected = query[sample][:, index, :]  # (heads, rows, dim)
    grouped = selected.reshape(kv_heads, -1, len(index), dim)  # (kv_heads, groups, rows, dim)
    logits = torch.matmul(grouped, key[sample][:, None].transpose(2, 3)) * scale  # (kv_heads, groups, rows, keys)
    logits = logits.reshape(-1, len(index), num_keys).float()
    if attention_mask is not None:
        mask = attention_mask[sample if attention_mask.shape[0] > 1 else 0][:, index, :num_keys]  # (1, rows, keys)
        if mask.dtype == torch.bool:
            return logits.masked_fill(~mask, float("-inf"))
        return logits + mask.float()
    positions = index + (num_keys - query.shape[2])
    columns = torch.arange(num_keys, device=query.device)
    return logits.masked_fill(columns[None, None, :] > positions[None, :, None], float("-inf"))


def row_probabilities(
    query: torch.Tensor,
    key: torch.Tensor,
    attention_mask: torch.Tensor | None,
    rows: Sequence[int],
    scaling: float | None,
    sample: int = 0,
) -> torch.Tensor:
    """Softmax attention of query rows ``rows`` of batch item ``sample``; (heads, len(rows), keys), float32."""
    return torch.softmax(row_logits(query, key, attention_mask, rows, scaling, sample), dim=-1)


def key_mass(
    query: torch.Tensor,
    key: torch.Tensor,
    attention_mask: torch.Tensor | None,
    rows: Sequence[int],
    keys: Sequence[int],
    scaling: float | None,
    sample: int = 0,
    chunk: int = DEFAULT_CHUNK,
) -> torch.Tensor:
    """Probabilities that query rows ``rows`` put on key positions ``keys``; (heads, len(rows), len(keys)).

    Chunked over rows: at most ``chunk`` full probability rows exist at a time.
    """
    columns = torch.as_tensor(list(keys), device=query.device, dtype=torch.long)
    out = []
    rows = list(rows)
    for start in range(0, len(rows), chunk):
        probs = row_probabilities(query, key, attention_mask, rows[start : start + chunk], scaling, sample)
        out.append(probs[:, :, columns])
    if not out:
        return torch.zeros(query.shape[1], 0, len(columns), device=query.device)
    return torch.cat(out, dim=1)
