"""What capture records of one ``generate``: per producing row (the prefill's last row, then each decode
row), layer and head, the argmax prompt position and the sink probability, for a left-padded batch in
each sample's own positions. Memory is O(batch x layers x heads x generated tokens), never O(seq^2).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

# Argmax of a layer without attention rows (sink: NaN): never a prompt position, so never a hit.
NOT_RECORDED = -1


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
