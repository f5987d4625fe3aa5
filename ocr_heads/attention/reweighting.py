"""Attention reweighting: selected heads' attention rows recomputed with their probability over a set of keys
edited, the one primitive behind every path-specific intervention (cut a head off the image, off the evidence,
point it elsewhere; sink redistribution is one use of it).

What an edit does to one attention row ``p`` (the probabilities sdpa would use, recomputed exactly by
:mod:`ocr_heads.attention.probabilities`: GQA, the layer's mask, left padding) with ``S`` the chosen key set:

- ``block``: ``p`` on ``S`` set to 0, the rest renormalised to sum 1.
- ``keep``: keep only ``S``: the complement of ``S`` blocked.
- ``scale``: ``p`` on ``S`` multiplied by ``factor`` (>= 0), then the row renormalised (``factor`` 0 is ``block``).
- ``redirect``: a share ``alpha`` of the mass on ``S`` (the *source*) moved onto a *target* set ``T``: the source
  keeps ``(1 - alpha) p``; ``T`` receives ``alpha * p(S)``, in proportion to its own probabilities
  (``spread="proportional"``) or evenly over its visible keys (``"uniform"``). The row's mass is preserved.
  Without a target, ``T`` is every key outside ``S``. A key in both sets counts as source.

Edge cases, defined rather than left to chance:

- A row whose kept keys (``block``/``keep``/``scale``) are all invisible to it (e.g. ``keep`` image keys on a
  prefill row before the image; ``block`` the sink on the first row, which sees only the sink) gets all-zero
  probabilities: the head's output on that row is 0, the same as masking the head there.
- A row that sees its kept keys but gives them exactly 0 probability (float underflow) spreads the mass evenly
  over them.
- ``redirect``: a row that cannot see any target key yet (a prefill row before the target) is left unchanged;
  a row that sees target keys all at probability 0 receives the moved mass evenly over them.
- Keys a row may not see (future, padding, another image's bidirectional block) keep probability 0 throughout.

Key sets are given per sample in the sample's *own* positions (prompt position ``p`` of an unpadded prompt;
generated tokens continue the count), as probes take them (:class:`ocr_heads.attention.probes.AttentionCall`):
in a left-padded batch, own position ``p`` of a sample is key ``p + pad`` where ``pad`` is that sample's first
visible key (the last query never sees padding). A binding sliding window (the cache then drops keys, so key
``k`` is no longer position ``k``) and logit soft-capping are refused with one ValueError
(:func:`ocr_heads.attention.forward.check_supported`).

Which query rows are edited: every row (``Rows.ALL``), the rows of decode steps (``DECODE``: one query per call),
the prompt's rows (``PREFILL``: calls with several queries), or the rows that produce a token (``PRODUCING``:
the last row of every call, i.e. the prefill's last row and every decode row).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum

import torch

from ocr_heads.attention.forward import check_supported, edited, heads_of_model
from ocr_heads.attention.probabilities import allowed_keys, attention_probabilities
from ocr_heads.models.base import ModelAdapter

__all__ = ["MODES", "SPREADS", "AttentionReweighting", "KeySet", "Reweight", "Rows", "first_visible_key",
           "reweight_probabilities", "reweighted_heads"]

# Query rows recomputed at once: bounds memory at (batch x heads x rows x keys).
QUERY_CHUNK = 1024
MODES = ("block", "keep", "scale", "redirect")
SPREADS = ("proportional", "uniform")


class Rows(str, Enum):
    """Which query rows an edit changes (the others keep sdpa's output)."""

    ALL = "all"
    DECODE = "decode"
    PREFILL = "prefill"
    PRODUCING = "producing"

    def select(self, q_len: int) -> slice | None:
        """The rows of a call with ``q_len`` queries this choice edits; None: none of them."""
        if self is Rows.DECODE and q_len > 1 or self is Rows.PREFILL and q_len == 1:
            return None
        if self is Rows.PRODUCING:
            return slice(q_len - 1, q_len)
        return slice(0, q_len)


@dataclass(frozen=True)
class Reweight:
    """What an edit does to the chosen keys' probabilities (see the module docstring)."""

    mode: str
    factor: float = 0.0  # scale: multiplies p on the set
    alpha: float = 1.0  # redirect: share of the source's mass moved to the target
    spread: str = "proportional"  # redirect: how the target shares the moved mass

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"reweighting mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.spread not in SPREADS:
            raise ValueError(f"redirect spread must be one of {', '.join(SPREADS)}, got {self.spread!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"redirect alpha must be in [0, 1], got {self.alpha}")
        if self.factor < 0.0:
            raise ValueError(f"scale factor must be >= 0, got {self.factor}")


def _tiny(probs: torch.Tensor) -> float:
    return torch.finfo(probs.dtype).tiny


def _renormalise(weighted: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """``weighted`` rows scaled to sum 1; a row with zero mass but visible ``kept`` keys: even over them; a row
    without a visible kept key: zeros."""
    total = weighted.sum(dim=-1, keepdim=True)
    count = kept.sum(dim=-1, keepdim=True)
    even = kept / count.clamp_min(1.0)
    return torch.where(total > 0, weighted / total.clamp_min(_tiny(weighted)), even)


def reweight_probabilities(probs: torch.Tensor, keys: torch.Tensor, edit: Reweight,
                           target: torch.Tensor | None = None, allowed: torch.Tensor | None = None) -> torch.Tensor:
    """``probs`` (..., keys) rows summing to 1 (or all 0), edited on the key set ``keys`` (bool, broadcastable to
    ``probs``) as ``edit`` says; ``target``: redirect's target set (bool, broadcastable; None: every key not in
    ``keys``); ``allowed``: the keys each row may see (bool, broadcastable; None: all). Pure; same dtype."""
    shape = probs.shape
    visible = torch.ones(shape, dtype=torch.bool, device=probs.device) if allowed is None else allowed.expand(shape)
    source = keys.expand(shape)
    if edit.mode == "redirect":
        goal = ~source if target is None else target.expand(shape) & ~source
        goal = (goal & visible).to(probs.dtype)
        on_goal = probs * goal
        goal_mass = on_goal.sum(dim=-1, keepdim=True)
        moved = edit.alpha * (probs * source).sum(dim=-1, keepdim=True)
        count = goal.sum(dim=-1, keepdim=True)
        if edit.spread == "proportional":
            share = torch.where(goal_mass > 0, on_goal / goal_mass.clamp_min(_tiny(probs)), goal / count.clamp_min(1.0))
        else:
            share = goal / count.clamp_min(1.0)
        new = torch.where(source, probs * (1.0 - edit.alpha), probs) + moved * share
        return torch.where(count > 0, new, probs)  # no visible target yet: the row is left as it is
    if edit.mode == "block":
        kept = ~source
    elif edit.mode == "keep":
        kept = source
    else:  # scale
        weights = torch.where(source, torch.as_tensor(edit.factor, dtype=probs.dtype, device=probs.device),
                              torch.ones((), dtype=probs.dtype, device=probs.device))
        kept = ~source if edit.factor == 0 else torch.ones_like(source)
        return _renormalise(probs * weights, (kept & visible).to(probs.dtype))
    kept = (kept & visible).to(probs.dtype)
    return _renormalise(probs * kept, kept)


def first_visible_key(row: torch.Tensor) -> torch.Tensor:
    """(batch,) first key the last query row may see, from its (batch, 1, keys) boolean mask: the sink,
    i.e. the first real token of a left-padded sample (the last row of a prompt is never padding)."""
    return row[:, 0].to(torch.int8).argmax(dim=-1)


def sample_pads(attention_mask: torch.Tensor | None, q_len: int, k_len: int, batch: int, causal: bool,
                device: torch.device) -> torch.Tensor:
    """(batch,) left padding of every sample: the first key its last query row may see (0 without a mask)."""
    if attention_mask is None:
        return torch.zeros(batch, dtype=torch.long, device=device)
    last = allowed_keys(attention_mask, torch.tensor([q_len - 1], device=device), q_len, k_len, causal)
    return first_visible_key(last[:, :, 0]).expand(batch)


@dataclass(frozen=True)
class KeySet:
    """A set of key positions per sample, in each sample's own coordinates. ``per_sample`` holds one tuple per
    sample of the batch, or a single tuple that every sample shares (the sink: ``KeySet.shared([0])``)."""

    per_sample: tuple[tuple[int, ...], ...]
    shared_by_all: bool = False

    @classmethod
    def shared(cls, positions: Iterable[int]) -> KeySet:
        return cls((tuple(int(p) for p in positions),), True)

    @classmethod
    def of_samples(cls, positions: Sequence[Iterable[int]]) -> KeySet:
        return cls(tuple(tuple(int(p) for p in sample) for sample in positions))

    def mask(self, pads: torch.Tensor, k_len: int) -> torch.Tensor:
        """Bool (batch, 1, 1, k_len): the keys of the set, own position ``p`` of sample ``b`` at key ``p + pads[b]``
        (positions beyond the keys seen so far are ignored)."""
        batch = pads.shape[0]
        if not self.shared_by_all and len(self.per_sample) != batch:
            raise ValueError(f"the key set holds {len(self.per_sample)} sample(s) but the batch has {batch}: "
                             "set the key sets of every batch before generating it")
        out = torch.zeros(batch, k_len, dtype=torch.bool, device=pads.device)
        for b in range(batch):
            positions = self.per_sample[0 if self.shared_by_all else b]
            if not positions:
                continue
            index = torch.as_tensor(positions, dtype=torch.long, device=pads.device) + pads[b]
            index = index[(index >= 0) & (index < k_len)]
            out[b, index] = True
        return out[:, None, None, :]


class AttentionReweighting:
    """Edit that recomputes the selected heads' attention rows with :func:`reweight_probabilities` applied.

    Only those heads' slices of the output, on the chosen rows, are replaced; every other head and row keeps
    sdpa's output. ``keys``/``target`` may be replaced between generates (:meth:`set_keys`): an experiment whose
    key sets depend on each sample (its image tokens, its evidence tiles) sets them before every batch.
    """

    def __init__(self, by_layer: dict[int, list[int]], edit: Reweight, keys: KeySet | None = None,
                 target: KeySet | None = None, rows: Rows | str = Rows.ALL) -> None:
        self.by_layer = by_layer
        self.edit = edit
        self.keys = keys
        self.target = target
        self.rows = Rows(rows)
        self._index: dict[tuple[int, torch.device], torch.Tensor] = {}

    def set_keys(self, keys: KeySet, target: KeySet | None = None) -> None:
        """The key sets of the next generate's samples (and redirect's target sets)."""
        self.keys = keys
        self.target = target

    def probabilities(self, module, query, key, attention_mask, heads: list[int], rows: slice,
                      scaling: float | None = None, is_causal: bool | None = None) -> torch.Tensor:
        """Edited probabilities of ``heads`` on query rows ``rows``: (batch, len(heads), rows, keys), float32."""
        if self.keys is None:
            raise ValueError("the reweighting edit has no key set: set_keys(...) before generating")
        batch, q_len, k_len = query.shape[0], query.shape[2], key.shape[2]
        causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
        probs = attention_probabilities(query, key, attention_mask, rows, heads, scaling, causal)
        allowed = allowed_keys(attention_mask, torch.arange(q_len, device=query.device)[rows], q_len, k_len, causal)
        pads = sample_pads(attention_mask, q_len, k_len, batch, causal, query.device)
        target = None if self.target is None else self.target.mask(pads, k_len)
        return reweight_probabilities(probs, self.keys.mask(pads, k_len), self.edit, target, allowed)

    def __call__(self, module, query, key, value, attention_mask, output, **kwargs) -> torch.Tensor:
        heads = self.by_layer.get(module.layer_idx)
        rows = self.rows.select(query.shape[2])
        if not heads or rows is None:
            return output
        # Own positions are key indices only while the cache keeps every key: refuse a binding sliding window.
        check_supported(module, key, recomputes_rows=True, **kwargs)
        groups = query.shape[1] // key.shape[1]
        index = self._index.get((module.layer_idx, query.device))
        if index is None:
            index = self._index[(module.layer_idx, query.device)] = torch.tensor(heads, device=query.device)
        v = value[:, index // groups].float()  # (b, h_sel, keys, d)
        contexts = []
        for start in range(rows.start, rows.stop, QUERY_CHUNK):
            chunk = slice(start, min(start + QUERY_CHUNK, rows.stop))
            probs = self.probabilities(module, query, key, attention_mask, heads, chunk, kwargs.get("scaling"),
                                       kwargs.get("is_causal"))
            contexts.append(torch.matmul(probs, v))
        context = torch.cat(contexts, dim=2).transpose(1, 2).to(output.dtype)  # (b, rows, h_sel, d)
        output = output.clone()  # out of place: the sdpa output may be a view the caller still holds
        output[:, rows, index] = context
        return output


@contextmanager
def reweighted_heads(adapter: ModelAdapter, heads: Iterable[str], edit: Reweight, keys: KeySet | None = None,
                     target: KeySet | None = None, rows: Rows | str = Rows.ALL) -> Iterator[AttentionReweighting]:
    """Inside the block, ``heads`` (``l{L}_h{H}`` names) attend as ``edit`` says over ``keys`` (and ``target``) on
    the chosen ``rows``; yields the edit, whose key sets may be replaced per batch (:meth:`AttentionReweighting.
    set_keys`). Unknown heads raise ValueError before the model is touched."""
    reweighting = AttentionReweighting(heads_of_model(adapter, heads), edit, keys, target, rows)
    with edited(adapter, reweighting):
        yield reweighting
