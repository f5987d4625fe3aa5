"""Probes: statistics recorded while one sample generates, beyond the producing rows' argmax and sink.

Capture always records, per producing row (the prefill's last row, then each decode row), layer and head,
the argmax over the prompt and the sink probability (:mod:`ocr_heads.attention.recorder`: the hot path, no
probe). Anything else a score needs is a *probe*: a small frozen declaration, in the sample's own
coordinates, that sees one attention call of one sample (:class:`AttentionCall`) and returns what to keep
of it. The recorder keeps those values per sample, probe and layer (:class:`ProbeRecord`); once generate
is done, :meth:`Probe.result` turns them into a typed result. A score declares the probes it needs in
its ``Recording`` and reads their results with ``observed.probe(ProbeClass)``.

Writing a probe:

- ``on_prefill(call)`` sees the whole prompt (``q_len > 1``), ``on_decode(call)`` one decode row; each
  returns a tensor to keep, or None. Compute only the rows you need with
  :mod:`ocr_heads.attention.probabilities` (one GQA rule, the layer's mask), never q_len x k_len per
  layer: what a probe keeps must stay bounded (rows x heads x keys it chose).
- Positions are the sample's own: with left padding, prompt position ``p`` is query row ``p + call.pad``
  at prefill and key ``p + call.pad - call.key_offset`` (:meth:`AttentionCall.key_index`).
- ``result(record)`` builds the result; :meth:`ProbeRecord.per_layer` and :meth:`ProbeRecord.per_step`
  stack the kept values, filling the layers without attention rows (hybrid models).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch

from ocr_heads.attention.probabilities import DEFAULT_CHUNK, attention_logits, key_mass

# Argmax of a layer without attention rows (sink: NaN): never a prompt position, so never a hit.
NOT_RECORDED = -1

R = TypeVar("R")


@dataclass(frozen=True)
class AttentionCall:
    """One sample's share of one call of the registered attention function."""

    layer: int
    query: torch.Tensor  # (1, heads, q_len, head_dim): the (padded) prompt at prefill, one row at decode
    key: torch.Tensor  # (1, kv_heads, keys, head_dim), kv heads not repeated (GQA)
    attention_mask: torch.Tensor | None  # the layer's mask for this sample (sdpa's: None or boolean)
    scaling: float | None  # the layer's; None: head_dim ** -0.5
    pad: int  # left padding: own position p sits at padded position p + pad
    key_offset: int = 0  # padded position of the first cached key (> 0 once a sliding window dropped keys)
    producing: torch.Tensor | None = None  # (1, heads, keys) float32 producing-row probabilities, if computed

    def producing_probabilities(self) -> torch.Tensor:
        """(heads, keys) probabilities of this call's producing row (its last query row): the ones capture
        computed for its argmax when given, else recomputed the same way."""
        if self.producing is not None:
            return self.producing[0]
        logits = attention_logits(self.query, self.key, self.attention_mask, [self.query.shape[2] - 1],
                                  scaling=self.scaling)[0, :, 0]
        return torch.softmax(logits, dim=-1, dtype=torch.float32).nan_to_num(0.0)

    @property
    def prefill(self) -> bool:
        return self.query.shape[2] > 1

    def query_row(self, position: int) -> int:
        """The prefill query row of own prompt position ``position``."""
        return position + self.pad

    def key_index(self, position: int) -> int:
        """The key index of own position ``position``."""
        return position + self.pad - self.key_offset


def sample_call(layer: int, query: torch.Tensor, key: torch.Tensor, attention_mask: torch.Tensor | None,
                scaling: float | None, sample: int, pad: int, key_offset: int,
                producing: torch.Tensor | None = None) -> AttentionCall:
    """Sample ``sample``'s share of a batched call (views: nothing is copied)."""
    batched = attention_mask is not None and attention_mask.shape[0] > 1
    mask = attention_mask[sample : sample + 1] if batched else attention_mask
    row = producing[sample : sample + 1] if producing is not None else None
    return AttentionCall(layer, query[sample : sample + 1], key[sample : sample + 1], mask, scaling, pad, key_offset,
                         row)


@dataclass(frozen=True)
class ProbeRecord:
    """What one probe kept for one sample: per layer, the values its calls returned, in call order (the
    prefill's first, then one per decode step)."""

    values: list[list[torch.Tensor]]  # [layer][call]
    layers: list[int]  # the layers with attention rows; the others never call and keep nothing

    def per_layer(self, fill: float, what: str) -> list[torch.Tensor]:
        """The first value of every layer (a prefill statistic); ``fill`` in layers without attention rows."""
        first = [kept[0] if kept else None for kept in self.values]
        missing = [layer for layer in self.layers if first[layer] is None]
        if missing:
            raise RuntimeError(f"no {what} was recorded in layers {missing}: was generate called inside the "
                               "capture context, after a reset with this probe?")
        blank = torch.full_like(first[self.layers[0]], fill)
        return [blank if value is None else value for value in first]

    def per_step(self, fill: float, what: str) -> torch.Tensor:
        """(steps, layers, ...) of a probe that keeps one value per producing row; ``fill`` in layers without
        attention rows."""
        steps = {len(self.values[layer]) for layer in self.layers}
        if len(steps) != 1 or steps == {0}:
            raise RuntimeError(f"no {what} was recorded (steps per layer: {sorted(steps)})")
        stacked = {layer: torch.stack(self.values[layer]) for layer in self.layers}
        blank = torch.full_like(stacked[self.layers[0]], fill)
        return torch.stack([stacked.get(layer, blank) for layer in range(len(self.values))], dim=1).cpu()


class Probe(Generic[R]):
    """A statistic recorded while one sample generates (see the module docstring). Subclasses are frozen
    dataclasses holding positions in the sample's own coordinates; what they record lives in the recorder,
    so one declaration may serve many generates."""

    @property
    def reads_positions(self) -> bool:
        """Whether it indexes keys as prompt positions; such probes are refused under a binding sliding window
        (:func:`ocr_heads.attention.forward.check_supported`)."""
        return True

    def on_prefill(self, call: AttentionCall) -> torch.Tensor | None:
        """What to keep of one layer's prefill call (``q_len > 1``); None: nothing."""
        return None

    def on_decode(self, call: AttentionCall) -> torch.Tensor | None:
        """What to keep of one layer's decode call (one query row); None: nothing."""
        return None

    def result(self, record: ProbeRecord) -> R:
        """The typed result, from everything kept for one sample."""
        raise NotImplementedError


def _positions(positions: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(p) for p in positions)


@dataclass(frozen=True)
class PromptArgmax:
    """Result of :class:`PromptRowArgmax`."""

    by_row: dict[int, torch.Tensor]  # prompt position -> (layers, heads) argmax of its row (NOT_RECORDED)


@dataclass(frozen=True)
class PromptRowArgmax(Probe[PromptArgmax]):
    """Each listed prompt row's own argmax over the prompt, at prefill (the authors' text rule reads answer
    tokens inside the prompt at their own rows). Chunked over rows to bound memory."""

    rows: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "rows", _positions(self.rows))

    @property
    def reads_positions(self) -> bool:
        return bool(self.rows)

    def on_prefill(self, call: AttentionCall) -> torch.Tensor | None:
        """(rows, heads) argmax, in own positions."""
        if not self.rows:
            return None
        out = []
        for start in range(0, len(self.rows), DEFAULT_CHUNK):
            index = [call.query_row(row) for row in self.rows[start : start + DEFAULT_CHUNK]]
            logits = attention_logits(call.query, call.key, call.attention_mask, index, scaling=call.scaling)
            out.append(logits[0].argmax(dim=-1).T - call.pad)
        return torch.cat(out)

    def result(self, record: ProbeRecord) -> PromptArgmax:
        if not self.rows:
            return PromptArgmax({})
        stacked = torch.stack(record.per_layer(NOT_RECORDED, "prompt row argmax"), dim=1).cpu()  # (rows, layers, heads)
        return PromptArgmax({position: stacked[i] for i, position in enumerate(self.rows)})


@dataclass(frozen=True)
class KeyMass:
    """Result of :class:`PrefillKeyMass`."""

    rows: tuple[int, ...]
    keys: tuple[int, ...]
    mass: torch.Tensor | None  # (layers, heads, rows, keys), NaN in layers without attention; None without rows


@dataclass(frozen=True)
class PrefillKeyMass(Probe[KeyMass]):
    """The prefill probabilities that the listed prompt rows put on the listed keys (the prefill score), in
    row chunks (:func:`ocr_heads.attention.probabilities.key_mass`)."""

    rows: tuple[int, ...]
    keys: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "rows", _positions(self.rows))
        object.__setattr__(self, "keys", _positions(self.keys))

    @property
    def reads_positions(self) -> bool:
        return bool(self.rows)

    def on_prefill(self, call: AttentionCall) -> torch.Tensor | None:
        """(heads, rows, keys)."""
        if not self.rows:
            return None
        return key_mass(call.query, call.key, call.attention_mask, [call.query_row(r) for r in self.rows],
                        [call.key_index(k) for k in self.keys], call.scaling)[0]

    def result(self, record: ProbeRecord) -> KeyMass:
        if not self.rows:
            return KeyMass(self.rows, self.keys, None)
        return KeyMass(self.rows, self.keys, torch.stack(record.per_layer(float("nan"), "prefill key mass")).cpu())


@dataclass(frozen=True)
class ImageAttentionResult:
    """Result of :class:`ImageAttention`."""

    attention: torch.Tensor  # (steps, layers, heads, image tokens) of the chosen layers and heads; NaN: no attention
    group_mass: dict[str, torch.Tensor]  # name -> (steps, all layers, all heads): mass on the group's keys
    layers: tuple[int, ...]  # the layers of ``attention``'s second axis
    heads: tuple[int, ...]  # the heads of its third axis


@dataclass(frozen=True)
class ImageAttention(Probe[ImageAttentionResult]):
    """Each producing row's probability on every image token (the attention map of the page while one token is
    produced), for the chosen layers and heads, plus its mass on named token groups for every head.

    Per layer call it reads the producing row's probabilities over all keys (heads x keys floats; the ones
    capture computed for its argmax, not a second softmax) and gathers the image columns: memory
    O(steps x layers x heads x image tokens), never the prompt squared. A position the
    cache no longer holds (a sliding window dropped it) has probability 0, as eager attention gives it, so the
    probe maps positions through :meth:`AttentionCall.key_index` under any window.
    """

    positions: tuple[int, ...]  # the image tokens, in the sample's own coordinates, in prompt order (may be empty
    # when groups are given: only their masses are kept)
    groups: tuple[tuple[str, tuple[int, ...]], ...] = ()  # (name, positions) pairs; a Mapping is accepted
    layers: tuple[int, ...] | None = None  # None: every layer
    heads: tuple[int, ...] | None = None  # None: every head
    dtype: torch.dtype = torch.float16  # what is kept: float16 halves the memory, float32 is exact

    def __post_init__(self) -> None:
        groups = self.groups.items() if isinstance(self.groups, Mapping) else self.groups
        object.__setattr__(self, "groups", tuple((str(name), _positions(p)) for name, p in groups))
        object.__setattr__(self, "positions", _positions(self.positions))
        if not self.positions and not self.groups:
            raise ValueError("ImageAttention needs at least one image token or group to read")
        for name in ("layers", "heads"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, _positions(getattr(self, name)))
        # Every position read at each call (image tokens, then each group), as one index built once per device:
        # turning thousands of positions into a tensor at every layer and step would cost more than the gather.
        object.__setattr__(self, "_sizes", [len(self.positions), *(len(p) for _, p in self.groups)])
        object.__setattr__(self, "_read", self.positions + tuple(q for _, p in self.groups for q in p))
        object.__setattr__(self, "_index", {})

    def _positions_on(self, device: torch.device) -> torch.Tensor:
        if device not in self._index:
            self._index[device] = torch.tensor(self._read, dtype=torch.long, device=device)
        return self._index[device]

    @property
    def reads_positions(self) -> bool:
        return False  # keys are mapped through key_offset, like the producing-row capture: exact under a window

    def on_prefill(self, call: AttentionCall) -> torch.Tensor | None:
        return self.on_decode(call)  # at prefill, the producing row is the prompt's last row

    def on_decode(self, call: AttentionCall) -> torch.Tensor | None:
        """One flat vector: the chosen heads' image probabilities, then every head's mass on each group."""
        if self.layers is not None and call.layer not in self.layers:
            return None
        probs = call.producing_probabilities()  # (heads, keys)
        image, *groups = _gather(probs, self._positions_on(probs.device), call).split(self._sizes, dim=-1)
        if self.heads is not None:
            image = image[list(self.heads)]
        return torch.cat([image.flatten(), *(group.sum(-1) for group in groups)]).to(self.dtype)

    def result(self, record: ProbeRecord) -> ImageAttentionResult:
        layers = self.layers if self.layers is not None else tuple(range(len(record.values)))
        attended = [layer for layer in layers if layer in record.layers]
        steps = {len(record.values[layer]) for layer in attended}
        if len(steps) != 1 or steps == {0}:
            raise RuntimeError(f"no image attention was recorded (steps per layer: {sorted(steps)})")
        (count,) = steps
        width = len(record.values[attended[0]][0])
        images, groups = len(self.positions), len(self.groups)
        # The kept vector: chosen heads x image tokens, then all heads x groups (see on_decode).
        chosen = len(self.heads) if self.heads is not None else width // (images + groups)
        blank = torch.full((count, width), float("nan"), dtype=self.dtype)  # a layer without attention rows
        stacked = torch.stack([torch.stack(record.values[layer]).cpu() if layer in record.layers else blank
                               for layer in layers], dim=1)  # (steps, layers, width)
        image = stacked[:, :, : chosen * images].reshape(count, len(layers), chosen, images)
        masses = stacked[:, :, chosen * images :].reshape(count, len(layers), groups, -1) if groups else None
        group_mass = {name: masses[:, :, g].float() for g, (name, _) in enumerate(self.groups)}
        heads = self.heads if self.heads is not None else tuple(range(chosen))
        return ImageAttentionResult(image, group_mass, layers, heads)


def _gather(probs: torch.Tensor, positions: torch.Tensor, call: AttentionCall) -> torch.Tensor:
    """(heads, len(positions)) probabilities of own positions; 0 for a key the cache no longer holds."""
    index = positions + (call.pad - call.key_offset)
    gathered = probs[:, index.clamp(min=0)]
    return gathered.masked_fill(index < 0, 0.0)
