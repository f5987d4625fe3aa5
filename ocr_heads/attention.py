"""Memory-efficient attention capture, and the hook point for interventions, through transformers'
attention interface.

During ``generate`` with a KV cache, every language-model layer calls the registered attention
function once per step: first with the whole prompt (prefill), then with one query (decode). We
delegate the real work to sdpa (the fast path stays untouched) and, for the one query row that
produces each new token (the prefill's last row, then every decode row), recompute that row's
attention logits to record, per head: the argmax key over the prompt and the probability on the
first token (the attention sink). A left-padded batch is recorded per sample in its own positions
(see :class:`AttentionRecorder`). Memory is O(batch x layers x heads x generated tokens), never O(seq^2).

Interventions (head masking, sink redistribution) plug into the same function as *edits*: callables
``edit(module, query, key, value, attention_mask, output, **kwargs) -> output`` applied, in order, to
the per-head output ``(batch, q_len, heads, head_dim)`` before the output projection. Capture and
edits combine freely; both are scoped by context managers that restore the model on exit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from ocr_heads.attention_core import DEFAULT_CHUNK, attention_logits, key_mass
from ocr_heads.models.base import ModelAdapter

IMPLEMENTATION = "ocr_heads"
# Argmax of a layer without attention rows (sink: NaN): never a prompt position, so never a hit.
NOT_RECORDED = -1
AttentionEdit = Callable[..., torch.Tensor]


@dataclass
class StepRecord:
    """Per (step, layer, head): argmax prompt position and sink probability of the producing row
    (:data:`NOT_RECORDED` and NaN in layers without attention rows)."""

    argmax: torch.Tensor  # (steps, layers, heads) int64
    sink: torch.Tensor  # (steps, layers, heads) float32
    keys: int | None = None  # the argmax ran over prompt positions [0, keys); None: the whole prompt


@dataclass
class AttentionRecorder:
    """Statistics of the producing rows of one ``generate`` call, for a batch of left-padded prompts.

    Positions are reported in each sample's own coordinates: sample i's prompt sits at padded
    positions ``pads[i] .. prompt_length - 1``, so its argmax is taken over those keys only and
    shifted back by ``pads[i]``; its sink is its first real token. ``pads`` None means one sample
    (or a batch without padding).
    """

    num_layers: int
    prompt_length: int | None = None  # padded prompt length; inferred from the prefill when not given
    # Prompt positions (own coordinates) whose own rows are also recorded at prefill (the authors' text rule
    # needs them): one list for a single sample, or one list per sample.
    prompt_rows: list = field(default_factory=list)
    pads: list[int] | None = None
    # The released OCR code takes the argmax over all prompt positions but the last (see ``reset``).
    exclude_last_prompt: bool = False
    # Layers that have attention rows (default: all). The others (the linear-attention layers of a hybrid
    # model) never call the attention function; their entries in the result are NOT_RECORDED.
    layers: list[int] | None = None
    # Prefill rows whose probabilities on ``mass_keys`` are recorded (own coordinates; the prefill score):
    # one list each for a single sample, or one list per sample.
    mass_rows: list = field(default_factory=list)
    mass_keys: list = field(default_factory=list)
    _prompt_argmax: list = field(default_factory=list)
    _mass: list = field(default_factory=list)
    _argmax: list[list[torch.Tensor]] = field(default_factory=list)
    _sink: list[list[torch.Tensor]] = field(default_factory=list)
    _pads: dict[torch.device, torch.Tensor] = field(default_factory=dict)
    _prefilled: bool = False  # a prefill was recorded since the last reset

    def reset(self, prompt_length: int | None = None, prompt_rows: list | None = None,
              pads: list[int] | None = None, exclude_last_prompt: bool = False, mass_rows: list | None = None,
              mass_keys: list | None = None) -> None:
        """Start a new generate. ``exclude_last_prompt`` restricts the argmax to positions [0, P-1): the
        released OCR code slices ``attn[row, :-len(generated)]`` out of a matrix one column shorter than
        prompt + output, which drops the prompt's last position."""
        self.prompt_length = prompt_length
        self.prompt_rows = list(prompt_rows or [])
        self.pads = list(pads) if pads is not None else None
        self.exclude_last_prompt = exclude_last_prompt
        self.mass_rows, self.mass_keys = list(mass_rows or []), list(mass_keys or [])
        self._prompt_argmax = [None] * self.num_layers
        self._mass = [None] * self.num_layers
        self._argmax = [[] for _ in range(self.num_layers)]
        self._sink = [[] for _ in range(self.num_layers)]
        self._pads = {}
        self._prefilled = False

    def begin_prefill(self, num_keys: int) -> None:
        """A prefill reached the first recorded layer. A second generate since :meth:`reset` starts the record
        over (prompt length inferred again), unless the recorder holds positions of the previous prompt (rows,
        padding), which only a reset for the new prompt can give."""
        if self._prefilled:
            if self.prompt_rows or self.mass_rows or self.pads:
                raise RuntimeError("the recorder holds rows or padding of the previous prompt: call reset() with "
                                   "the new prompt's before each generate")
            self.reset(exclude_last_prompt=self.exclude_last_prompt)
        self._prefilled = True
        if self.prompt_length is None:
            self.prompt_length = num_keys

    @property
    def recorded_layers(self) -> list[int]:
        return list(range(self.num_layers)) if self.layers is None else list(self.layers)

    def argmax_keys(self) -> int:
        """Padded prompt positions [0, argmax_keys) the argmax runs over."""
        return self.prompt_length - 1 if self.exclude_last_prompt else self.prompt_length

    def key_offset(self, layer: int, num_keys: int) -> int:
        """Padded position of the layer's first cached key: 0, unless a sliding window dropped older keys."""
        return max(self.prompt_length + len(self._argmax[layer]) - num_keys, 0)

    def pad_tensor(self, batch: int, device: torch.device) -> torch.Tensor | None:
        """(batch,) left padding of each sample, cached per device; None when nothing is padded."""
        if self.pads is not None and len(self.pads) != batch:
            raise RuntimeError(f"recorder was reset for {len(self.pads)} samples, the model runs {batch}")
        if not any(self.pads or []):
            return None
        if device not in self._pads:
            self._pads[device] = torch.tensor(self.pads, device=device)
        return self._pads[device]

    def rows_per_sample(self) -> list[list[int]]:
        """``prompt_rows`` as one list per sample."""
        return _per_sample(self.prompt_rows)

    def mass_per_sample(self) -> list[tuple[list[int], list[int]]]:
        """``(mass_rows, mass_keys)`` of each sample."""
        return list(zip(_per_sample(self.mass_rows), _per_sample(self.mass_keys), strict=True))

    def observe(self, layer: int, argmax: torch.Tensor, sink: torch.Tensor) -> None:
        """``argmax``/``sink``: (batch, heads) of the producing query row, in own coordinates."""
        # Stay on the device: a .cpu() here would synchronise the GPU at every layer of every step.
        self._argmax[layer].append(argmax)
        self._sink[layer].append(sink)

    def observe_prompt_rows(self, layer: int, argmax: list[torch.Tensor]) -> None:
        """``argmax``: per sample, (rows, heads) for its ``prompt_rows``."""
        self._prompt_argmax[layer] = argmax

    def observe_key_mass(self, layer: int, mass: list[torch.Tensor | None]) -> None:
        """``mass``: per sample, (heads, rows, keys) probabilities of its mass rows on its mass keys."""
        self._mass[layer] = mass

    def key_mass(self, sample: int = 0) -> torch.Tensor | None:
        """(layers, heads, rows, keys) prefill probabilities of one sample's mass rows on its mass keys (NaN in
        layers without attention rows); None when the sample has no mass rows."""
        requested = self.mass_per_sample()
        if not requested or not requested[sample][0]:
            return None
        recorded = [per_layer[sample] for per_layer in self._mass if per_layer is not None]
        if not recorded or any(self._mass[layer] is None for layer in self.recorded_layers):
            raise RuntimeError("no prefill key mass was recorded: reset with mass_rows/mass_keys before generate")
        blank = torch.full_like(recorded[0], float("nan"))
        return torch.stack([blank if per_layer is None else per_layer[sample] for per_layer in self._mass]).cpu()

    def prompt_argmax(self, sample: int = 0) -> dict[int, torch.Tensor]:
        """Prompt position -> (layers, heads) argmax of its own row, for one sample of the batch
        (NOT_RECORDED in layers without attention)."""
        rows = self.rows_per_sample()
        if not rows or not rows[sample]:
            return {}
        recorded = [per_layer[sample] for per_layer in self._prompt_argmax if per_layer is not None]
        if not recorded:
            raise RuntimeError("no prompt rows were recorded: was generate called inside the capture context?")
        blank = torch.full_like(recorded[0], NOT_RECORDED)
        per_layer = [blank if t is None else t[sample] for t in self._prompt_argmax]
        stacked = torch.stack(per_layer, dim=1).cpu()  # (rows, layers, heads)
        return {position: stacked[i] for i, position in enumerate(rows[sample])}

    def _stacked(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(steps, layers, batch, heads) argmax and sink."""
        layers = self.recorded_layers
        steps = {len(self._argmax[layer]) for layer in layers}
        if len(steps) != 1:
            raise RuntimeError(f"layers recorded different numbers of steps: {sorted(steps)}")
        if steps == {0}:
            raise RuntimeError("nothing was recorded: was generate called inside the capture context?")
        stray = [layer for layer in range(self.num_layers) if layer not in layers and self._argmax[layer]]
        if stray:
            raise RuntimeError(f"layers {stray} recorded attention but were declared without attention rows")
        first = self._argmax[layers[0]]
        shape = (len(first), self.num_layers, *first[0].shape)
        argmax = torch.full(shape, NOT_RECORDED, dtype=torch.int64)
        sink = torch.full(shape, float("nan"), dtype=torch.float32)
        for layer in layers:
            argmax[:, layer] = torch.stack(self._argmax[layer]).cpu()
            sink[:, layer] = torch.stack(self._sink[layer]).cpu()
        return argmax, sink

    def _keys(self, sample: int) -> int | None:
        """Own-coordinate end of the argmax range of one sample, when it is not its whole prompt."""
        if not self.exclude_last_prompt:
            return None
        return self.argmax_keys() - (self.pads[sample] if self.pads else 0)

    def result(self) -> StepRecord:
        """The record of a single-sample generate."""
        argmax, sink = self._stacked()
        if argmax.shape[2] != 1:
            raise RuntimeError(f"the recorded generate ran {argmax.shape[2]} samples: use results()")
        return StepRecord(argmax=argmax[:, :, 0], sink=sink[:, :, 0], keys=self._keys(0))

    def results(self, lengths: list[int] | None = None) -> list[StepRecord]:
        """One record per sample of a batched generate; ``lengths`` (tokens each sample generated) cuts
        the steps a finished sample still ran while others went on, as if it had run alone."""
        argmax, sink = self._stacked()
        records = []
        for i in range(argmax.shape[2]):
            steps = argmax.shape[0] if lengths is None else lengths[i]
            records.append(StepRecord(argmax=argmax[:steps, :, i], sink=sink[:steps, :, i], keys=self._keys(i)))
        return records


def _per_sample(lists: list) -> list[list[int]]:
    """A list of positions for one sample, or one list per sample, as one list per sample."""
    if lists and isinstance(lists[0], (list, tuple)):
        return [list(rows) for rows in lists]
    return [lists] if lists else []


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
    probs = torch.softmax(last_row_scores(query, key, attention_mask, scaling), dim=-1, dtype=torch.float32)
    return row_statistics(probs, prompt_keys, pads, offset)


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


def prompt_rows_argmax(
    query: torch.Tensor, key: torch.Tensor, attention_mask: torch.Tensor | None, rows: list[int],
    scaling: float | None, chunk: int = DEFAULT_CHUNK, sample: int = 0, pad: int = 0,
) -> torch.Tensor:
    """Argmax of selected prefill rows (own coordinates) of one sample, (rows, heads); chunked to bound
    memory. With left padding ``pad`` the rows sit at ``row + pad`` (the mask hides the pads) and
    positions are shifted back."""
    mask = attention_mask[sample : sample + 1] if attention_mask is not None and attention_mask.shape[0] > 1 \
        else attention_mask
    out = []
    for i in range(0, len(rows), chunk):
        index = [row + pad for row in rows[i : i + chunk]]
        logits = attention_logits(query[sample : sample + 1], key[sample : sample + 1], mask, index, scaling=scaling)
        out.append(logits[0].argmax(dim=-1).T - pad)
    return torch.cat(out)


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
      that index keys as prompt positions (``recomputes_rows``: prompt-row argmax of the authors' text
      rule, sink redistribution): the KV cache then drops keys, so key 0 is no longer the sink and key k
      no longer position k. The producing-row capture maps cached keys back to positions itself
      (:meth:`AttentionRecorder.key_offset`) and is exact under any window.
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
    """sdpa, then the active edits, then the statistics of the producing row for the active recorder."""
    hooks = getattr(module, _HOOKS, _NO_HOOKS)
    recorder = hooks.recorders[-1] if hooks.recorders else None
    recomputes = bool(recorder and (recorder.prompt_rows or recorder.mass_rows))
    check_supported(module, key, recomputes_rows=recomputes, **kwargs)
    output, weights = sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    for edit in hooks.edits:
        output = edit(module, query, key, value, attention_mask, output, **kwargs)
    if recorder is not None:
        if query.shape[2] > 1 and module.layer_idx == recorder.recorded_layers[0]:
            recorder.begin_prefill(key.shape[2])
        pads = recorder.pad_tensor(query.shape[0], query.device)
        argmax, sink = producing_row_statistics(query, key, attention_mask, kwargs.get("scaling"),
                                                recorder.argmax_keys(), pads,
                                                recorder.key_offset(module.layer_idx, key.shape[2]))
        recorder.observe(module.layer_idx, argmax, sink)
        if recorder.prompt_rows and query.shape[2] > 1:
            pad_list = recorder.pads or [0] * query.shape[0]
            argmax_rows = [prompt_rows_argmax(query, key, attention_mask, rows, kwargs.get("scaling"), sample=i,
                                              pad=pad_list[i])
                           if rows else None for i, rows in enumerate(recorder.rows_per_sample())]
            recorder.observe_prompt_rows(module.layer_idx, argmax_rows)
        if recorder.mass_rows and query.shape[2] > 1:
            recorder.observe_key_mass(module.layer_idx, prefill_key_mass(recorder, query, key, attention_mask,
                                                                          kwargs.get("scaling")))
    return output, weights


def prefill_key_mass(recorder: AttentionRecorder, query: torch.Tensor, key: torch.Tensor,
                     attention_mask: torch.Tensor | None, scaling: float | None) -> list[torch.Tensor | None]:
    """Per sample, (heads, rows, keys): its mass rows' prefill probabilities on its mass keys, found at their
    left-padded positions (own coordinates + pad; the mask hides the pads)."""
    pads = recorder.pads or [0] * query.shape[0]
    out: list[torch.Tensor | None] = []
    for i, (rows, keys) in enumerate(recorder.mass_per_sample()):
        if not rows:
            out.append(None)
            continue
        batched = attention_mask is not None and attention_mask.shape[0] > 1
        mask = attention_mask[i : i + 1] if batched else attention_mask
        out.append(key_mass(query[i : i + 1], key[i : i + 1], mask, [r + pads[i] for r in rows],
                            [k + pads[i] for k in keys], scaling)[0])
    return out


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
    length, padding or prompt rows to record.
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
