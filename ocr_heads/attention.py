"""Memory-efficient attention capture, and the hook point for interventions, through transformers'
attention interface.

During ``generate`` with a KV cache, every language-model layer calls the registered attention
function once per step: first with the whole prompt (prefill), then with one query (decode). We
delegate the real work to sdpa (the fast path stays untouched) and, for the one query row that
produces each new token (the prefill's last row, then every decode row), recompute that row's
attention probabilities to record, per head: the argmax key over the prompt and the probability
on key 0 (the attention sink). Memory is O(layers x heads x generated tokens), never O(seq^2).

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

from ocr_heads.attention_core import key_mass
from ocr_heads.models.base import ModelAdapter

IMPLEMENTATION = "ocr_heads"
AttentionEdit = Callable[..., torch.Tensor]


@dataclass
class StepRecord:
    """Per (step, layer, head): argmax prompt position and sink probability of the producing row."""

    argmax: torch.Tensor  # (steps, layers, heads) int64
    sink: torch.Tensor  # (steps, layers, heads) float32
    keys: int | None = None  # the argmax ran over prompt positions [0, keys); None: the whole prompt


@dataclass
class AttentionRecorder:
    num_layers: int
    prompt_length: int | None = None  # inferred from the prefill when not given
    # Prompt positions whose own rows are also recorded at prefill (the authors' text rule needs them).
    prompt_rows: list[int] = field(default_factory=list)
    # The released OCR code takes the argmax over all prompt positions but the last (see ``reset``).
    exclude_last_prompt: bool = False
    # Prefill rows whose probabilities on ``mass_keys`` are recorded (prompt positions; the prefill score).
    mass_rows: list[int] = field(default_factory=list)
    mass_keys: list[int] = field(default_factory=list)
    _prompt_argmax: list[torch.Tensor] = field(default_factory=list)
    _mass: list[torch.Tensor | None] = field(default_factory=list)
    _argmax: list[list[torch.Tensor]] = field(default_factory=list)
    _sink: list[list[torch.Tensor]] = field(default_factory=list)

    def reset(self, prompt_length: int | None = None, prompt_rows: list[int] | None = None,
              exclude_last_prompt: bool = False, mass_rows: list[int] | None = None,
              mass_keys: list[int] | None = None) -> None:
        """Start a new sample. ``exclude_last_prompt`` restricts the argmax to positions [0, P-1): the
        released OCR code slices ``attn[row, :-len(generated)]`` out of a matrix one column shorter than
        prompt + output, which drops the prompt's last position."""
        self.prompt_length = prompt_length
        self.prompt_rows = list(prompt_rows or [])
        self.exclude_last_prompt = exclude_last_prompt
        self.mass_rows, self.mass_keys = list(mass_rows or []), list(mass_keys or [])
        self._prompt_argmax = [None] * self.num_layers
        self._mass = [None] * self.num_layers
        self._argmax = [[] for _ in range(self.num_layers)]
        self._sink = [[] for _ in range(self.num_layers)]

    def observe(self, layer: int, probs: torch.Tensor) -> None:
        """``probs``: (heads, keys) probabilities of the producing query row."""
        if self.prompt_length is None:
            self.prompt_length = probs.shape[-1]
        # A sliding-window layer's cache keeps only the last keys: key k is position offset + k (0 otherwise).
        offset = max(self.prompt_length + len(self._argmax[layer]) - probs.shape[-1], 0)
        # Stay on the device: a .cpu() here would synchronise the GPU at every layer of every step.
        visible = max(self._argmax_keys() - offset, 0)
        if visible:
            self._argmax[layer].append(probs[:, :visible].argmax(dim=-1) + offset)
        else:  # no prompt key in the window: every prompt probability is 0, and argmax of zeros is 0
            self._argmax[layer].append(torch.zeros(probs.shape[0], dtype=torch.long, device=probs.device))
        sink = probs[:, 0].float() if offset == 0 else torch.zeros_like(probs[:, 0], dtype=torch.float)
        self._sink[layer].append(sink)

    def _argmax_keys(self) -> int:
        return self.prompt_length - 1 if self.exclude_last_prompt else self.prompt_length

    def observe_prompt_rows(self, layer: int, argmax: torch.Tensor) -> None:
        """``argmax``: (rows, heads) for ``prompt_rows``."""
        self._prompt_argmax[layer] = argmax

    def observe_key_mass(self, layer: int, mass: torch.Tensor) -> None:
        """``mass``: (heads, rows, keys) probabilities of ``mass_rows`` on ``mass_keys``."""
        self._mass[layer] = mass

    def key_mass(self) -> torch.Tensor:
        """(layers, heads, rows, keys) probabilities of ``mass_rows`` on ``mass_keys`` at prefill."""
        if any(mass is None for mass in self._mass):
            raise RuntimeError("no prefill key mass was recorded: reset with mass_rows/mass_keys before generate")
        return torch.stack(self._mass).cpu()

    def prompt_argmax(self) -> dict[int, torch.Tensor]:
        """Prompt position -> (layers, heads) argmax of its own row."""
        if not self.prompt_rows:
            return {}
        stacked = torch.stack(self._prompt_argmax, dim=1).cpu()  # (rows, layers, heads)
        return {position: stacked[i] for i, position in enumerate(self.prompt_rows)}

    def result(self) -> StepRecord:
        steps = {len(per_layer) for per_layer in self._argmax}
        if len(steps) != 1:
            raise RuntimeError(f"layers recorded different numbers of steps: {sorted(steps)}")
        if steps == {0}:
            raise RuntimeError("nothing was recorded: was generate called inside the capture context?")
        argmax = torch.stack([torch.stack(per_layer) for per_layer in self._argmax], dim=1).cpu()
        sink = torch.stack([torch.stack(per_layer) for per_layer in self._sink], dim=1).cpu()
        return StepRecord(argmax=argmax, sink=sink, keys=self._argmax_keys() if self.exclude_last_prompt else None)


_ACTIVE: list[AttentionRecorder] = []
_EDITS: list[AttentionEdit] = []


def last_row_probabilities(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None,
) -> torch.Tensor:
    """Softmax attention of the last query row of batch item 0, (heads, keys), computed as eager does."""
    kv_heads, num_keys = key.shape[1], key.shape[2]
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    # GQA without copying keys: query heads h*groups .. h*groups+groups-1 share kv head h (as repeat_kv).
    last = query[0, :, -1, :].reshape(kv_heads, -1, query.shape[-1])  # (kv_heads, groups, dim)
    scores = torch.matmul(last, key[0].transpose(1, 2)).reshape(-1, num_keys) * scale  # (heads, keys)
    if attention_mask is not None:
        row = attention_mask[0, :, -1, :num_keys]
        scores = scores.masked_fill(~row, float("-inf")) if row.dtype == torch.bool else scores + row
    # With no mask the last row sees every key: it is the newest position (causal).
    return torch.softmax(scores, dim=-1, dtype=torch.float32)


def prompt_rows_argmax(
    query: torch.Tensor, key: torch.Tensor, rows: list[int], scaling: float | None, chunk: int = 64
) -> torch.Tensor:
    """Causal argmax of selected prefill rows of batch item 0, (rows, heads); chunked to bound memory."""
    groups = query.shape[1] // key.shape[1]
    keys = key[0].repeat_interleave(groups, dim=0)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    columns = torch.arange(keys.shape[1], device=keys.device)
    out = []
    for i in range(0, len(rows), chunk):
        index = torch.tensor(rows[i : i + chunk], device=query.device)
        scores = torch.matmul(query[0][:, index, :], keys.transpose(1, 2)) * scale  # (heads, rows, keys)
        scores = scores.masked_fill(columns[None, None, :] > index[None, :, None], float("-inf"))
        out.append(scores.argmax(dim=-1).T)
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
      (:meth:`AttentionRecorder.observe`) and is exact under any window.
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
    check_supported(module, key, recomputes_rows=bool(_ACTIVE and _ACTIVE[-1].prompt_rows), **kwargs)
    output, weights = sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    for edit in _EDITS:
        output = edit(module, query, key, value, attention_mask, output, **kwargs)
    if _ACTIVE:
        recorder = _ACTIVE[-1]
        probs = last_row_probabilities(module, query, key, attention_mask, kwargs.get("scaling"))
        recorder.observe(module.layer_idx, probs)
        if recorder.prompt_rows and query.shape[2] > 1:
            argmax = prompt_rows_argmax(query, key, recorder.prompt_rows, kwargs.get("scaling"))
            recorder.observe_prompt_rows(module.layer_idx, argmax)
        if recorder.mass_rows and query.shape[2] > 1:
            mass = key_mass(query, key, attention_mask, recorder.mass_rows, recorder.mass_keys, kwargs.get("scaling"))
            recorder.observe_key_mass(module.layer_idx, mass[0])
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

    Call ``recorder.reset()`` before each generate (or use one block per sample).
    """
    recorder = AttentionRecorder(num_layers=adapter.shape.num_layers)
    recorder.reset()
    with text_attention(adapter, IMPLEMENTATION):
        _ACTIVE.append(recorder)
        try:
            yield recorder
        finally:
            _ACTIVE.remove(recorder)


@contextmanager
def edited(adapter: ModelAdapter, edit: AttentionEdit) -> Iterator[None]:
    """Apply ``edit`` to the language model's attention output inside the block (see module docstring)."""
    with text_attention(adapter, IMPLEMENTATION):
        _EDITS.append(edit)
        try:
            yield
        finally:
            _EDITS.remove(edit)


def eager_attention_rows(adapter: ModelAdapter, inputs, generated: list[int]) -> list[torch.Tensor]:
    """Reference: eager attention with ``output_attentions`` over prompt + generated tokens, one forward.

    Returns per layer the (heads, steps, keys) probabilities of the producing rows P-1 .. P+G-2.
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
    return [layer[0, :, prompt_length - 1 :, :].float().cpu() for layer in output.attentions]


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
    for layer, probs in enumerate(eager_attention_rows(adapter, inputs, generated)):
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
