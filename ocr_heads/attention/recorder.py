"""What capture records of one ``generate``: per producing row (the prefill's last row, then each decode
row), layer and head, the argmax prompt position and the sink probability, for a left-padded batch in
each sample's own positions; plus what each sample's probes keep (:mod:`ocr_heads.attention.probes`).
Memory is O(batch x layers x heads x generated tokens) plus the probes' bounded values, never O(seq^2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import torch

from ocr_heads.attention.probes import NOT_RECORDED, Probe, ProbeRecord, sample_call

__all__ = ["NOT_RECORDED", "AttentionRecorder", "StepRecord"]

R = TypeVar("R")


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
    (or a batch without padding). Each sample's probes see its share of every attention call
    (:meth:`observe_probes`) and give their results after generate (:meth:`probe_results`).
    """

    num_layers: int
    prompt_length: int | None = None  # padded prompt length; inferred from the prefill when not given
    pads: list[int] | None = None
    # The released OCR code takes the argmax over all prompt positions but the last (see ``reset``).
    exclude_last_prompt: bool = False
    # Layers that have attention rows (default: all). The others (the linear-attention layers of a hybrid
    # model) never call the attention function; their entries in the result are NOT_RECORDED.
    layers: list[int] | None = None
    # Per sample, the probes to run at every attention call (empty: none, the hot path alone).
    probes: list[list[Probe]] = field(default_factory=list)
    # Some probe indexes keys as prompt positions (refused under a binding sliding window); set by ``reset``.
    reads_positions: bool = False
    _kept: list[list[list[list[torch.Tensor]]]] = field(default_factory=list)  # [sample][probe][layer][call]
    _argmax: list[list[torch.Tensor]] = field(default_factory=list)
    _sink: list[list[torch.Tensor]] = field(default_factory=list)
    _pads: dict[torch.device, torch.Tensor] = field(default_factory=dict)
    _prefilled: bool = False  # a prefill was recorded since the last reset

    def reset(self, prompt_length: int | None = None, probes: Sequence[Probe] | Sequence[Sequence[Probe]] | None = None,
              pads: list[int] | None = None, exclude_last_prompt: bool = False) -> None:
        """Start a new generate. ``probes``: a list of probes for a single sample, or one list per sample
        (their positions in each sample's own coordinates). ``exclude_last_prompt`` restricts the argmax to
        positions [0, P-1): the released OCR code slices ``attn[row, :-len(generated)]`` out of a matrix one
        column shorter than prompt + output, which drops the prompt's last position."""
        self.prompt_length = prompt_length
        self.pads = list(pads) if pads is not None else None
        self.exclude_last_prompt = exclude_last_prompt
        self.probes = _per_sample(probes)
        self.reads_positions = any(probe.reads_positions for sample in self.probes for probe in sample)
        self._kept = [[[[] for _ in range(self.num_layers)] for _ in sample] for sample in self.probes]
        self._argmax = [[] for _ in range(self.num_layers)]
        self._sink = [[] for _ in range(self.num_layers)]
        self._pads = {}
        self._prefilled = False

    def begin_prefill(self, num_keys: int) -> None:
        """A prefill reached the first recorded layer. A second generate since :meth:`reset` starts the record
        over (prompt length inferred again), unless the recorder holds positions of the previous prompt (rows,
        padding), which only a reset for the new prompt can give."""
        if self._prefilled:
            if self.probes or self.pads:
                raise RuntimeError("the recorder holds rows or padding of the previous prompt (probes, pads): call "
                                   "reset() with the new prompt's before each generate")
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

    def observe(self, layer: int, argmax: torch.Tensor, sink: torch.Tensor) -> None:
        """``argmax``/``sink``: (batch, heads) of the producing query row, in own coordinates."""
        # Stay on the device: a .cpu() here would synchronise the GPU at every layer of every step.
        self._argmax[layer].append(argmax)
        self._sink[layer].append(sink)

    def observe_probes(self, layer: int, query: torch.Tensor, key: torch.Tensor,
                       attention_mask: torch.Tensor | None, scaling: float | None, key_offset: int,
                       producing: torch.Tensor | None = None) -> None:
        """Run every sample's probes on its share of one attention call and keep what they return."""
        if len(self.probes) != query.shape[0]:
            raise RuntimeError(f"recorder was reset with probes for {len(self.probes)} samples, the model runs "
                               f"{query.shape[0]}")
        prefill = query.shape[2] > 1
        for sample, probes in enumerate(self.probes):
            if not probes:
                continue
            pad = self.pads[sample] if self.pads else 0
            call = sample_call(layer, query, key, attention_mask, scaling, sample, pad, key_offset, producing)
            for index, probe in enumerate(probes):
                value = probe.on_prefill(call) if prefill else probe.on_decode(call)
                if value is not None:
                    self._kept[sample][index][layer].append(value)

    def probe_outputs(self, sample: int = 0, steps: int | None = None) -> list[object]:
        """Each probe's result for one sample of the batch, in the order its probes were given. ``steps`` (tokens
        the sample generated) drops what its probes kept of decode steps it still ran while other samples went on."""
        if not self.probes:
            return []
        results = []
        for probe, kept in zip(self.probes[sample], self._kept[sample], strict=True):
            values = [per_layer[:steps] if steps is not None else per_layer for per_layer in kept]
            results.append(probe.result(ProbeRecord(values, self.recorded_layers)))
        return results

    def probe_results(self, sample: int = 0, steps: int | None = None) -> dict[type[Probe], object]:
        """Probe class -> its result, for one sample of the batch (see :meth:`probe_outputs`); for a sample with
        one probe of each class (several of one class: use :meth:`probe_outputs`)."""
        if not self.probes:
            return {}
        kinds = [type(probe) for probe in self.probes[sample]]
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"sample {sample} has several probes of one class ({[k.__name__ for k in kinds]}): "
                             "use probe_outputs()")
        return dict(zip(kinds, self.probe_outputs(sample, steps), strict=True))

    def probe_result(self, kind: type[Probe[R]], sample: int = 0) -> R:
        """The result of the sample's probe of class ``kind``."""
        results = self.probe_results(sample)
        if kind not in results:
            raise KeyError(f"no {kind.__name__} probe was given to reset() for sample {sample}")
        return results[kind]  # type: ignore[return-value]

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


def _per_sample(probes: Sequence[Probe] | Sequence[Sequence[Probe]] | None) -> list[list[Probe]]:
    """Probes of a single sample, or one list per sample, as one list per sample ([] when there are none). A
    sample may hold several probes of one class (two scores of one run reading different rows), but not the same
    declaration twice: that would compute it twice (a run of several scores gives each distinct probe once)."""
    if not probes:
        return []
    lists = [list(probes)] if isinstance(probes[0], Probe) else [list(sample) for sample in probes]
    for sample, declared in enumerate(lists):
        repeated = [probe for i, probe in enumerate(declared) if probe in declared[:i]]
        if repeated:
            raise ValueError(f"sample {sample} has one {type(repeated[0]).__name__} probe twice")
    return lists if any(lists) else []
