"""Causal interventions on decoder heads: masking and attention-sink redistribution (a use of the general
attention reweighting, :mod:`ocr_heads.attention.reweighting`).

Both are *edits* plugged into the project's one attention implementation (see
:mod:`ocr_heads.attention`), scoped by context managers that restore the model on exit, even when
the block raises::

    with mask_heads(adapter, ["l26_h9", "l22_h6"]):
        answer = adapter.generate(inputs)
    with redistribute_sink_heads(adapter, ["l26_h9"], beta=0.4):
        answer = adapter.generate(inputs)

They act on the language model only (never the vision tower), at every query position of the
prefill and of every decode step, and combine with :func:`ocr_heads.attention.capture` (which
records the layer's *unedited* attention probabilities, recomputed from query and key).
Edits assume eval mode (no attention dropout). The sink is each sample's first real token: key 0
unpadded, the first key its attention mask lets the last query see in a left-padded batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch

from ocr_heads.attention.forward import edited, heads_of_model
from ocr_heads.attention.reweighting import AttentionReweighting, KeySet, Reweight, reweight_probabilities
from ocr_heads.models.base import ModelAdapter

__all__ = [
    "BETA_DEFAULT",
    "BETA_RANGE",
    "HeadMask",
    "SinkRedistribution",
    "mask_heads",
    "redistribute_sink",
    "redistribute_sink_heads",
    "sink_probabilities",
]

# The fraction of the sink probability the sink keeps: the paper's default, and the values that make sense
# (1 is the identity, 0 empties the sink). exp_sink's --beta declares itself from these.
BETA_DEFAULT = 0.4
BETA_RANGE = (0.0, 1.0)


# ---------------------------------------------------------------- masking


class HeadMask:
    """Edit that zeroes the selected heads' context vectors (their slice of the o_proj input)."""

    def __init__(self, by_layer: dict[int, list[int]]) -> None:
        self.by_layer = by_layer
        self._index: dict[tuple[int, torch.device], torch.Tensor] = {}

    def __call__(self, module, query, key, value, attention_mask, output, **kwargs) -> torch.Tensor:
        heads = self.by_layer.get(module.layer_idx)
        if not heads:
            return output
        index = self._index.get((module.layer_idx, output.device))
        if index is None:
            index = torch.tensor(heads, device=output.device)
            self._index[(module.layer_idx, output.device)] = index
        # Out of place: the sdpa output may be a view the caller still holds.
        return output.index_fill(2, index, 0.0)


@contextmanager
def mask_heads(adapter: ModelAdapter, heads: Iterable[str]) -> Iterator[None]:
    """Zero the output of every head in ``heads`` (``l{L}_h{H}`` names) inside the block.

    The head's context vector, its slice of the input to the attention output projection, is set
    to 0 at all positions, prefill and decode. An empty list changes nothing (logits bit-identical
    to plain sdpa). Unknown heads raise ValueError before the model is touched.
    """
    with edited(adapter, HeadMask(heads_of_model(adapter, heads))):
        yield


# ---------------------------------------------------------------- sink redistribution


def _check_beta(beta: float) -> None:
    low, high = BETA_RANGE
    if not low <= beta <= high:
        raise ValueError(f"beta must be in [{low:g}, {high:g}], got {beta}")


def redistribute_sink(probs: torch.Tensor, beta: float, allowed: torch.Tensor | None = None,
                      sink: torch.Tensor | None = None) -> torch.Tensor:
    """Move attention mass off the sink onto the keys after it, as the design defines.

    ``probs``: attention probabilities ``(..., keys)``, each row summing to 1. The sink is key 0, or
    per row ``sink`` (an index tensor broadcastable to ``probs[..., :1]``: the first real token of a
    left-padded sample; the keys before it are padding with probability 0 and stay so). Per row, with
    p0 the probability on the sink: the sink gets ``beta * p0`` and the remaining ``(1 - beta) * p0`` is
    added to the keys after it in proportion to their probabilities,
    ``p_j + (1 - beta) * p0 * p_j / sum_{k>sink} p_k``. The row's mass is preserved.

    If all keys after the sink have probability 0, the mass is spread uniformly over them (the
    authors' rule), or, when ``allowed`` (bool, broadcastable to ``probs``) is given, uniformly over
    the allowed ones only, so that it never leaks to masked (future or padding) keys. A row with no
    such key (e.g. the first query of a causal prefill, which sees only the sink) is returned unchanged.

    ``beta`` must lie in [0, 1]: 1 is the identity, 0 empties the sink. Pure: ``probs`` is not
    modified; the result has the dtype of ``probs``. It is :func:`~ocr_heads.attention.reweighting.
    reweight_probabilities`' redirect with the sink as source, the keys after it as target, alpha = 1 - beta.
    """
    _check_beta(beta)
    if probs.shape[-1] < 2:
        return probs.clone()  # nowhere to move the mass to
    keys = torch.arange(probs.shape[-1], device=probs.device)
    if sink is None:
        sink = torch.zeros((1,) * probs.dim(), dtype=torch.long, device=probs.device)
    return reweight_probabilities(probs, keys == sink, sink_edit(beta), keys > sink, allowed)


def sink_edit(beta: float) -> Reweight:
    """The sink redistribution as a reweighting: ``1 - beta`` of the sink's mass redirected in proportion."""
    _check_beta(beta)
    return Reweight("redirect", alpha=1.0 - beta, spread="proportional")


def sink_probabilities(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    attention_mask: torch.Tensor | None,
    heads: list[int],
    beta: float,
    scaling: float | None = None,
    is_causal: bool | None = None,
    rows: slice | None = None,
) -> torch.Tensor:
    """Redistributed attention probabilities of ``heads``: (batch, len(heads), rows, keys), float32.

    Recomputed by :func:`ocr_heads.attention.probabilities.attention_probabilities` (eager's GQA convention and the
    keys sdpa lets each row see), then edited as :func:`redistribute_sink` says, the sink being each sample's
    first visible key (its first real token under left padding).
    """
    rows = rows or slice(0, query.shape[2])
    return SinkRedistribution({}, beta).probabilities(module, query, key, attention_mask, heads, rows, scaling,
                                                      is_causal)


class SinkRedistribution(AttentionReweighting):
    """Edit that recomputes the selected heads' attention with the sink mass redistributed: the reweighting that
    redirects ``1 - beta`` of each sample's own position 0 onto every other key, in proportion.

    Only those heads' slices of the output are replaced; every other head keeps sdpa's output.
    """

    def __init__(self, by_layer: dict[int, list[int]], beta: float) -> None:
        super().__init__(by_layer, sink_edit(beta), KeySet.shared([0]))
        self.beta = beta


@contextmanager
def redistribute_sink_heads(adapter: ModelAdapter, heads: Iterable[str], beta: float = BETA_DEFAULT) -> Iterator[None]:
    """Inside the block, the heads in ``heads`` put ``beta`` times their key-0 probability on key 0
    and the rest on the other keys in proportion (see :func:`redistribute_sink`), at every query
    of prefill and decode, causally. Unknown heads raise ValueError before the model is touched.
    """
    with edited(adapter, SinkRedistribution(heads_of_model(adapter, heads), beta)):
        yield
