"""Attention probabilities of selected query rows and heads, recomputed from one attention call's inputs.

The attention function registered in :mod:`ocr_heads.attention` sees ``query`` (batch, heads, q_len,
dim), ``key`` (batch, kv_heads, k_len, dim) and the layer's mask; sdpa computes the output but never
exposes probabilities. Everything that needs probabilities (capture's statistics, the prefill key
mass, sink redistribution) recomputes them here, the way eager attention does, in one convention:

- GQA: query head ``h`` reads kv head ``h // groups`` (transformers' ``repeat_kv``);
- scaling: the layer's ``scaling`` (default ``head_dim ** -0.5``);
- mask: the layer's mask rows when given (boolean: True = may attend; float: added to the logits);
  without one, what sdpa does then: a single query row, or a non-causal layer, sees every key; several
  causal rows use sdpa's upper-left alignment (query ``i`` sees keys ``0..i``; transformers passes no
  mask with ``q_len > 1`` only when ``k_len == q_len`` or for an empty static cache).

Callers bound memory by asking for a chunk of rows at a time (:func:`key_mass` does): a call holds
(batch x heads x rows x keys), never q_len x k_len for every row of every layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

DEFAULT_CHUNK = 64
Rows = Sequence[int] | slice | None


def _row_index(rows: Rows, q_len: int, device: torch.device) -> torch.Tensor:
    if rows is None:
        rows = slice(0, q_len)
    if isinstance(rows, slice):
        return torch.arange(q_len, device=device)[rows]
    return torch.as_tensor(list(rows), device=device, dtype=torch.long)


def allowed_keys(attention_mask: torch.Tensor | None, rows: torch.Tensor, q_len: int, k_len: int,
                 causal: bool = True) -> torch.Tensor | None:
    """Boolean (batch|1, 1, rows, keys) of the keys each row may see, or None for "every key".

    A float mask gives the keys it does not push to the dtype's minimum."""
    if attention_mask is not None:
        mask = attention_mask[:, :, rows, :k_len]
        return mask if mask.dtype == torch.bool else mask > torch.finfo(mask.dtype).min
    if q_len == 1 or not causal:
        return None
    keys = torch.arange(k_len, device=rows.device)
    return (keys[None, :] <= rows[:, None])[None, None]


def attention_logits(
    query: torch.Tensor,
    key: torch.Tensor,
    attention_mask: torch.Tensor | None,
    rows: Rows = None,
    heads: Sequence[int] | None = None,
    scaling: float | None = None,
    causal: bool = True,
) -> torch.Tensor:
    """Logits of query rows ``rows`` (indices or a slice of this call's queries; None: all) for query heads
    ``heads`` (None: all); (batch, heads, rows, keys), float32, keys the row may not see at -inf."""
    batch, kv_heads, k_len, dim = key.shape
    q_len = query.shape[2]
    scale = scaling if scaling is not None else dim**-0.5
    index = _row_index(rows, q_len, query.device)
    groups = query.shape[1] // kv_heads
    if heads is None:
        # Without copying keys: (batch, kv_heads, groups, rows, dim) against (batch, kv_heads, 1, dim, keys).
        selected = query[:, :, index].reshape(batch, kv_heads, groups, len(index), dim)
        logits = torch.matmul(selected, key[:, :, None].transpose(-1, -2)).reshape(batch, -1, len(index), k_len)
    else:
        head_index = torch.as_tensor(list(heads), device=query.device, dtype=torch.long)
        selected = query[:, head_index][:, :, index]
        logits = torch.matmul(selected, key[:, head_index // groups].transpose(-1, -2))
    logits = logits.float() * scale
    if attention_mask is not None and attention_mask.dtype != torch.bool:
        logits = logits + attention_mask[:, :, index, :k_len].float()
    allowed = allowed_keys(attention_mask, index, q_len, k_len, causal)
    return logits if allowed is None else logits.masked_fill(~allowed, float("-inf"))


def attention_probabilities(*args: Any, **kwargs: Any) -> torch.Tensor:
    """Softmax of :func:`attention_logits` (same arguments); (batch, heads, rows, keys), float32. A row that
    may see no key (a padding query) gives zeros: sdpa's output there is never used."""
    logits = attention_logits(*args, **kwargs)
    return torch.softmax(logits, dim=-1).nan_to_num(0.0)


def key_mass(
    query: torch.Tensor,
    key: torch.Tensor,
    attention_mask: torch.Tensor | None,
    rows: Sequence[int],
    keys: Sequence[int],
    scaling: float | None,
    chunk: int = DEFAULT_CHUNK,
) -> torch.Tensor:
    """Probabilities that query rows ``rows`` put on key positions ``keys``; (batch, heads, len(rows),
    len(keys)). Chunked over rows: at most ``chunk`` full probability rows per sample exist at a time."""
    columns = torch.as_tensor(list(keys), device=query.device, dtype=torch.long)
    rows = list(rows)
    out = [attention_probabilities(query, key, attention_mask, rows[start : start + chunk], None, scaling)[..., columns]
           for start in range(0, len(rows), chunk)]
    if not out:
        return torch.zeros(query.shape[0], query.shape[1], 0, len(columns), device=query.device)
    return torch.cat(out, dim=2)
