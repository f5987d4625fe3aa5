"""The one registered attention function: memory-efficient attention capture, and the hook point for
interventions, through transformers' attention interface.

During ``generate`` with a KV cache, every language-model layer calls the registered attention
function once per step: first with the whole prompt (prefill), then with one query (decode). We
delegate the real work to sdpa (the fast path stays untouched) and, for the one query row that
produces each new token (the prefill's last row, then every decode row), recompute that row's
attention logits to record, per head: the argmax key over the prompt and the probability on the
first token (the attention sink). A left-padded batch is recorded per sample in its own positions
(see :class:`AttentionRecorder`). Memory is O(batch x layers x heads x generated tokens), never O(seq^2).
Any further statistic is a probe (:mod:`ocr_heads.attention.probes`): the function hands every call to
the recorder's probes, one loop for all of them.

Interventions (head masking, sink redistribution) plug into the same function as *edits*: callables
``edit(module, query, key, value, attention_mask, output, **kwargs) -> output`` applied, in order, to
the per-head output ``(batch, q_len, heads, head_dim)`` before the output projection. Capture and
edits combine freely; both are scoped by context managers that restore the model on exit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from ocr_heads.attention.probabilities import attention_logits
from ocr_heads.attention.recorder import AttentionRecorder
from ocr_heads.core.heads import check_heads_exist, heads_by_layer, parse_head
from ocr_heads.models.base import ModelAdapter

IMPLEMENTATION = "ocr_heads"
AttentionEdit = Callable[..., torch.Tensor]


@dataclass
class AttentionHooks:
    """What the ocr_heads attention function applies for one model: its edits, and its recorders (the newest
    records). It hangs on that model's attention modules, so two models in one process never see each
    other's recorders or edits."""

    recorders: list[AttentionRecorder] = field(default_factory=list)
    edits: list[AttentionEdit] = field(default_factory=list)


_HOOKS = "_ocr_heads_hooks"
_NO_HOOKS = AttentionHooks()


def model_hooks(adapter: ModelAdapter) -> AttentionHooks:
    """The hooks of the adapter's model, attached to each of its attention modules on first use."""
    modules = [module for module in adapter.attention_modules() if module is not None]
    hooks = getattr(modules[0], _HOOKS, None) if modules else None
    if hooks is None:
        hooks = AttentionHooks()
        for module in modules:
            module.__dict__[_HOOKS] = hooks  # a plain attribute, not a submodule or a parameter
    return hooks


def last_row_scores(query: torch.Tensor, key: torch.Tensor, attention_mask: torch.Tensor | None,
                    scaling: float | None) -> torch.Tensor:
    """Attention logits of every sample's last query row, (batch, heads, keys); masked keys -inf."""
    return attention_logits(query, key, attention_mask, [query.shape[2] - 1], scaling=scaling)[:, :, 0]


def producing_row_statistics(query: torch.Tensor, key: torch.Tensor, attention_mask: torch.Tensor | None,
                             scaling: float | None, prompt_keys: int, pads: torch.Tensor | None,
                             offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`row_statistics` of every sample's last query row. Few kernels on purpose: at small sizes
    each costs more than the decode step's sdpa call (see README, capture overhead)."""
    return row_statistics(producing_row_probabilities(query, key, attention_mask, scaling), prompt_keys, pads, offset)


def producing_row_probabilities(query: torch.Tensor, key: torch.Tensor, attention_mask: torch.Tensor | None,
                                scaling: float | None) -> torch.Tensor:
    """(batch, heads, keys) float32 probabilities of every sample's last query row (the producing row)."""
    return torch.softmax(last_row_scores(query, key, attention_mask, scaling), dim=-1, dtype=torch.float32)


def row_statistics(probs: torch.Tensor, prompt_keys: int, pads: torch.Tensor | None,
                   offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample and head, of one query row's probabilities ``probs`` (batch, heads, keys): the argmax key
    over the sample's own prompt (padded positions [pad, prompt_keys), reported in its own coordinates) and
    the probability on its first real key (the sink); both (batch, heads).

    ``pads``: (batch,) left padding, or None when no sample is padded. ``offset``: padded position of the
    first cached key (> 0 when a sliding window dropped older keys; positions outside the window have
    probability 0, as eager gives them).
    """
    batch, heads = probs.shape[:2]
    pad = pads[:, None] if pads is not None else 0
    visible = max(prompt_keys - offset, 0)
    if visible:  # left pads have probability 0: never the maximum
        argmax = probs[:, :, :visible].argmax(dim=-1) + offset - pad
    else:  # no prompt key in the window: every prompt probability is 0, and argmax of zeros is the first
        argmax = torch.zeros(batch, heads, dtype=torch.long, device=probs.device)
    if pads is None and offset == 0:
        # A copy, not a view: a view would keep the whole probability row alive in the recorder.
        return argmax, probs[:, :, 0].clone()
    sink_key = (pads if pads is not None else torch.zeros(batch, dtype=torch.long, device=probs.device)) - offset
    sink = probs.gather(2, sink_key.clamp(min=0)[:, None, None].expand(-1, heads, 1)).squeeze(2)
    return argmax, sink.masked_fill(sink_key[:, None] < 0, 0.0)  # a sink out of the window holds nothing


def describe_layer(module: torch.nn.Module) -> str:
    """``<model> layer <i>`` for error messages (the checkpoint path when the config has one)."""
    config = getattr(module, "config", None)
    name = getattr(config, "_name_or_path", "") or getattr(config, "model_type", "") or type(module).__name__
    return f"{name} layer {getattr(module, 'layer_idx', '?')}"


def check_supported(module: torch.nn.Module, key: torch.Tensor, recomputes_rows: bool, **kwargs) -> None:
    """Refuse what the recomputed attention rows cannot reproduce, instead of being silently wrong.

    - Attention logit softcapping (Gemma2-style ``softcap``): sdpa, which computes every output here,
      cannot apply it.
    - A sliding window that binds (``sliding_window`` <= the keys the layer sees), for the recomputations
      that index keys as prompt positions (``recomputes_rows``: probes whose ``reads_positions`` is true,
      e.g. the prompt-row argmax of the authors' text rule; sink redistribution): the KV cache then drops
      keys, so key 0 is no longer the sink and key k no longer position k. The producing-row capture maps
      cached keys back to positions itself (:meth:`AttentionRecorder.key_offset`) and is exact under any
      window.
    """
    softcap = kwargs.get("softcap")
    if softcap is not None:
        raise ValueError(f"{describe_layer(module)}: attention logit softcapping (softcap={softcap}) is not "
                         "supported: the ocr_heads attention path runs sdpa, which cannot apply it")
    window = kwargs.get("sliding_window")
    if recomputes_rows and window is not None and key.shape[2] >= window:
        raise ValueError(f"{describe_layer(module)}: sliding-window attention (window {window}) over "
                         f"{key.shape[2]} keys is not supported: the cache drops keys beyond the window, so "
                         "recorded positions would not be prompt positions; use inputs shorter than the window")


def ocr_heads_attention_forward(module, query, key, value, attention_mask, **kwargs):
    """sdpa, then the active edits, then, for the active recorder, the statistics of the producing row and
    whatever its probes keep of this call."""
    hooks = getattr(module, _HOOKS, _NO_HOOKS)
    recorder = hooks.recorders[-1] if hooks.recorders else None
    check_supported(module, key, recomputes_rows=bool(recorder and recorder.reads_positions), **kwargs)
    output, weights = sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    for edit in hooks.edits:
        output = edit(module, query, key, value, attention_mask, output, **kwargs)
    if recorder is not None:
        if query.shape[2] > 1 and module.layer_idx == recorder.recorded_layers[0]:
            recorder.begin_prefill(key.shape[2])
        pads = recorder.pad_tensor(query.shape[0], query.device)
        offset = recorder.key_offset(module.layer_idx, key.shape[2])
        producing = producing_row_probabilities(query, key, attention_mask, kwargs.get("scaling"))
        argmax, sink = row_statistics(producing, recorder.argmax_keys(), pads, offset)
        recorder.observe(module.layer_idx, argmax, sink)
        if recorder.probes:  # one loop for every probe: a new statistic is a new probe, not a branch here
            # Probes reading the producing row reuse these probabilities instead of recomputing them.
            recorder.observe_probes(module.layer_idx, query, key, attention_mask, kwargs.get("scaling"), offset,
                                    producing)
    return output, weights


AttentionInterface.register(IMPLEMENTATION, ocr_heads_attention_forward)
# Our function takes sdpa's masks (None when causal, else boolean).
AttentionMaskInterface.register(IMPLEMENTATION, sdpa_mask)


@contextmanager
def text_attention(adapter: ModelAdapter, implementation: str) -> Iterator[None]:
    """Route the language model's attention through ``implementation``; restored on exit."""
    previous = adapter.model.config.get_text_config()._attn_implementation
    adapter.set_text_attention(implementation)
    try:
        yield
    finally:
        adapter.set_text_attention(previous)


@contextmanager
def capture(adapter: ModelAdapter) -> Iterator[AttentionRecorder]:
    """Record per-head argmax/sink of every producing row while ``generate`` runs inside the block.

    Each generate starts the record over; call ``recorder.reset(...)`` before a generate to give its prompt
    length, padding or probes (:mod:`ocr_heads.attention.probes`).
    """
    recorder = AttentionRecorder(num_layers=adapter.shape.num_layers, layers=adapter.scoreable_layers)
    recorder.reset()
    recorders = model_hooks(adapter).recorders
    with text_attention(adapter, IMPLEMENTATION):
        recorders.append(recorder)
        try:
            yield recorder
        finally:
            recorders.remove(recorder)


def heads_of_model(adapter: ModelAdapter, heads: Iterable[str]) -> dict[int, list[int]]:
    """``l{L}_h{H}`` names grouped by layer (sorted head indices), checked against the model: unknown heads, or
    heads in layers without attention rows (linear attention), raise ValueError before anything is edited."""
    heads = list(heads)
    shape = adapter.shape
    check_heads_exist(heads, shape.num_layers, shape.num_heads)
    by_layer = heads_by_layer(heads)
    scoreable = adapter.scoreable_layers
    without = sorted(layer for layer in by_layer if layer not in scoreable)
    if without:
        named = [h for h in heads if parse_head(h)[0] in without]
        raise ValueError(f"{', '.join(named)}: layer(s) {without} have no attention heads (linear attention); "
                         f"only heads in layers {scoreable} can be masked or edited")
    return {layer: sorted(set(hs)) for layer, hs in by_layer.items()}


@contextmanager
def edited(adapter: ModelAdapter, edit: AttentionEdit) -> Iterator[None]:
    """Apply ``edit`` to the language model's attention output inside the block (see module docstring)."""
    edits = model_hooks(adapter).edits
    with text_attention(adapter, IMPLEMENTATION):
        edits.append(edit)
        try:
            yield
        finally:
            edits.remove(edit)
