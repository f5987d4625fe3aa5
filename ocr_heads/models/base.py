"""The model-agnostic interface every model family implements (one adapter per family).

Everything else in the project talks to a model through :class:`ModelAdapter`: it never learns
which family it runs, where image tokens sit, or how a family tiles a page.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from ocr_heads.core.paths import model_name
from ocr_heads.models.families import Knob
from ocr_heads.models.protocol import PAPER, check_protocol, resolve_protocol

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageTokens:
    """The LLM tokens of one page (a contiguous run of image-token positions), each a box on the original page.

    A position that shows no page pixels (LLaVA-OneVision's newline embedding after each row, a cell
    of pure padding) has a NaN box: no overlap test ever selects it, so it is never a target.
    """

    page: int
    start: int  # position of the first image token in the input ids
    tile_boxes: np.ndarray  # (count, 4) float boxes [x0, y0, x1, y1] in original page pixels, NaN = no pixels
    layout: str = ""  # how the page was cut into tokens, for people (e.g. "13 x 18 tokens ...")

    @property
    def count(self) -> int:
        return len(self.tile_boxes)

    @property
    def shows_pixels(self) -> np.ndarray:
        """(count,) bool: which positions show page pixels (False for NaN boxes)."""
        return ~np.isnan(self.tile_boxes).any(axis=1)

    @property
    def positions(self) -> range:
        return range(self.start, self.start + self.count)


@dataclass
class ModelInputs:
    """What ``generate`` needs, plus where things are in the prompt."""

    tensors: dict[str, torch.Tensor]
    image_tokens: list[ImageTokens] = field(default_factory=list)
    # For each prompt token, its (start, end) character span in the context, or (-1, -1) if outside it.
    context_offsets: list[tuple[int, int]] = field(default_factory=list)
    # The prompt positions of the question's tokens, where they were found (set when a sample is scored:
    # ocr_heads.pipeline.sample_scoring.question_positions); empty otherwise.
    question_positions: list[int] = field(default_factory=list)

    @property
    def input_ids(self) -> torch.Tensor:
        return self.tensors["input_ids"]

    @property
    def prompt_length(self) -> int:
        return int(self.input_ids.shape[-1])

    @property
    def tokens_per_page(self) -> list[int]:
        """Image tokens of each page, summed over its runs (a page may be several runs: Gemma 3's crops, SmolVLM's
        tiles)."""
        counts = [0] * (max((tokens.page for tokens in self.image_tokens), default=-1) + 1)
        for tokens in self.image_tokens:
            counts[tokens.page] += tokens.count
        return counts

    def context_tokens(self, start: int, end: int) -> list[int]:
        """Prompt positions whose characters overlap ``context[start:end]``."""
        return [i for i, (s, e) in enumerate(self.context_offsets) if s < end and e > start and s >= 0]


@dataclass(frozen=True)
class AttentionShape:
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int


# Per-token tensors (batch, sequence): left-padded when prompts are batched; every other tensor (pixel
# values, image grids, tiles) is per image and concatenated along its first dimension.
SEQUENCE_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids")


def left_padding(batch: list[ModelInputs]) -> list[int]:
    """Pad tokens :func:`collate` puts before each prompt: position p of sample i sits at p + pad[i]."""
    longest = max(inputs.prompt_length for inputs in batch)
    return [longest - inputs.prompt_length for inputs in batch]


def collate(batch: list[ModelInputs], pad_token_id: int) -> dict[str, torch.Tensor]:
    """One set of model tensors for several prompts: sequences left-padded to the longest (pad id,
    attention mask 0, token type 0 = text), per-image tensors concatenated in sample order.

    Left padding keeps every prompt's last token at the end, where generation continues; the
    attention mask makes the pads invisible, and M-RoPE / 1-D positions skip them.
    """
    if len(batch) == 1:
        return dict(batch[0].tensors)
    pads = left_padding(batch)
    keys = set(batch[0].tensors)
    if any(set(inputs.tensors) != keys for inputs in batch):
        raise ValueError("cannot batch prompts with different inputs (e.g. pages and text-only)")
    out = {}
    for key in batch[0].tensors:
        parts = [inputs.tensors[key] for inputs in batch]
        if key in SEQUENCE_KEYS:
            fill = pad_token_id if key == "input_ids" else 0
            out[key] = torch.cat([torch.nn.functional.pad(part, (pad, 0), value=fill)
                                  for part, pad in zip(parts, pads, strict=True)])
        else:
            out[key] = torch.cat(parts)
    return out


def expand_placeholders(prompt: str, placeholder: str, expansions: list[str]) -> str:
    """Replace the chat template's image placeholders, in order, by each page's token sequence."""
    if prompt.count(placeholder) != len(expansions):
        raise ValueError(f"chat template produced {prompt.count(placeholder)} image placeholders "
                         f"for {len(expansions)} pages")
    pieces = prompt.split(placeholder)
    return pieces[0] + "".join(expansion + piece for expansion, piece in zip(expansions, pieces[1:], strict=True))


def contiguous_runs(input_ids: torch.Tensor, token_id: int, counts: list[int]) -> list[int]:
    """First position of every page, when pages take consecutive contiguous runs of ``counts`` ``token_id``s."""
    positions = (input_ids == token_id).nonzero().flatten().tolist()
    if len(positions) != sum(counts):
        raise ValueError(f"{len(positions)} image tokens in the prompt, the pages need {sum(counts)}")
    starts, cursor = [], 0
    for count in counts:
        if positions[cursor + count - 1] != positions[cursor] + count - 1:
            raise ValueError("image tokens of one page are not contiguous")
        starts.append(positions[cursor])
        cursor += count
    return starts


def region_token_boxes(region: tuple[float, float, float, float], side: int) -> np.ndarray:
    """Row-major ``side x side`` token boxes over a page region ``(x0, y0, x1, y1)`` that the model sees stretched to
    a square (Gemma 3's page and crops, SmolVLM's tiles and global image)."""
    x0, y0, x1, y1 = region
    r, c = np.divmod(np.arange(side * side), side)
    w, h = (x1 - x0) / side, (y1 - y0) / side
    return np.stack([x0 + c * w, y0 + r * h, x0 + (c + 1) * w, y0 + (r + 1) * h], axis=1)


def context_offsets(prompt: str, offset_mapping: list[tuple[int, int]], context: str | None) -> list[tuple[int, int]]:
    """For each token (its character span in ``prompt``), its span in ``context``, or (-1, -1) outside it."""
    start = prompt.find(context) if context else -1
    offsets = []
    for begin, end in offset_mapping:
        inside = start >= 0 and begin >= start and end <= start + len(context)
        offsets.append((begin - start, end - start) if inside else (-1, -1))
    return offsets


class ModelAdapter(ABC):
    """One loaded model with its tokenizer and image processor.

    The defaults below fit transformers' multimodal classes whose language model sits at
    ``model.model.language_model`` with a ``text_config``; a family overrides what differs.
    """

    model: torch.nn.Module | None  # None when loaded with weights=False (inputs and geometry only)
    config: object  # the model's config (also without weights)
    tokenizer: object
    name: str  # short name for files, e.g. "Qwen2-VL-2B-Instruct"
    protocol: str  # "paper" or "native" (ocr_heads.models.protocol)
    protocol_source: str  # where the protocol came from: given, declared by the checkpoint, or the default
    knobs: dict[str, int | bool | None]  # every declared knob's value; None: not given, the protocol decides
    image_token_id: int
    chat_template_source: str  # "checkpoint", or "fallback" when the checkpoint ships none
    # What each family declares:
    family: str  # its name in messages, e.g. "Qwen2-VL"
    model_class: type  # the transformers class its checkpoints load into
    chat_template: str  # its chat format, used when a checkpoint ships none
    image_token: str  # the token string whose id must be config.image_token_id (checked on load)
    # config.json keys naming special-token ids -> the token each must be in the tokenizer (for checks).
    CONFIG_TOKENS: dict[str, str] = {}
    # The family's page settings beyond --protocol: its declaration's knobs (ocr_heads/models/families/), keyword
    # arguments of the adapter and flags of every command.
    KNOBS: tuple[Knob, ...] = ()

    def __init__(
        self,
        model_id: str,
        dtype: torch.dtype | str | None = None,
        device_map: str | None = None,
        protocol: str | None = None,
        weights: bool = True,
        **knobs: int | bool | None,
    ) -> None:
        """Load ``model_id`` (hub id or local dir) with the page settings of ``protocol``, overridden by the
        family's ``KNOBS`` given as keyword arguments (any other keyword is a ValueError, before anything loads).
        ``protocol`` None: the one the checkpoint's config declares, else the paper's
        (:func:`~ocr_heads.models.protocol.resolve_protocol`); logged either way.

        Model: sdpa attention; float32 on CPU, the checkpoint's dtype on GPU unless ``dtype`` is given.
        ``weights=False`` reads only the config: enough to build inputs and tile geometry.
        """
        if protocol is not None:
            check_protocol(protocol)  # a bad name fails before anything loads
        self.knobs = self.check_knobs(knobs)
        self._load(model_id, dtype, device_map, weights)
        self.protocol, self.protocol_source = resolve_protocol(protocol, self.config)
        logger.info("%s: page protocol %s (%s)", model_id, self.protocol, self.protocol_source)
        self.image_token_id = self.config.image_token_id
        self.setup(model_id)
        if self.tokenizer.convert_tokens_to_ids(self.image_token) != self.image_token_id:
            raise ValueError(f"{model_id}: tokenizer's {self.image_token} id does not match config.image_token_id")

    @classmethod
    def check_knobs(cls, given: dict[str, object]) -> dict[str, int | bool | None]:
        """Every declared knob with its given value (its default when not given); a knob the family does not
        declare, or a value of the wrong type, is a ValueError."""
        declared = {knob.name: knob for knob in cls.KNOBS}
        unknown = sorted(set(given) - set(declared))
        if unknown:
            takes = ", ".join(declared) or "no page settings beyond the protocol"
            raise ValueError(f"{cls.family} models take {takes}, not {', '.join(unknown)}")
        for name, value in given.items():
            if value is not None:
                declared[name].check(value)
        return {name: given.get(name, knob.default) for name, knob in declared.items()}

    def knob_or_protocol(self, name: str, paper: int | bool, native: int | bool) -> int | bool:
        """Knob ``name`` when given, else the protocol's value: ``paper`` under paper, ``native`` (the checkpoint's
        own) under native."""
        value = self.knobs[name]
        if value is not None:
            return value
        return paper if self.protocol == PAPER else native

    @abstractmethod
    def setup(self, model_id: str) -> None:
        """The family's own loading, after the model, config and tokenizer: its image processor (applying
        ``self.knobs`` and the protocol) and the token geometry, checked against the config."""

    def _load(self, model_id: str, dtype: torch.dtype | str | None, device_map: str | None, weights: bool) -> None:
        """Model (or only its config without weights), tokenizer and chat template."""
        from transformers import AutoConfig, AutoTokenizer

        self.name = model_name(model_id)
        if dtype is None:
            dtype = "auto" if torch.cuda.is_available() else torch.float32
        if weights:
            self.model = self.model_class.from_pretrained(
                model_id, dtype=dtype, device_map=device_map, attn_implementation="sdpa"
            ).eval()
            self.config = self.model.config
        else:
            self.model = None
            self.config = AutoConfig.from_pretrained(model_id)
        self.tokenizer = AutoTokenizer.from_pretrained(model_id)
        self.chat_template_source = "checkpoint" if self.tokenizer.chat_template else "fallback"
        if self.tokenizer.chat_template is None:
            self.tokenizer.chat_template = self.chat_template

    @abstractmethod
    def settings(self) -> dict:
        """The effective page-to-token settings (protocol and processor values), for meta files."""

    @abstractmethod
    def expected_tokens(self, page_size: tuple[int, int]) -> int:
        """Image tokens a ``(width, height)`` page should get, worked out from :meth:`settings` alone.

        Independent of the image processor's run, so a check can catch a processor that does not
        apply the settings.
        """

    @property
    def shape(self) -> AttentionShape:
        text = self.config.text_config
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        return AttentionShape(text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads, head_dim)

    @abstractmethod
    def image_inputs(self, pages: list[Image.Image], question: str) -> ModelInputs:
        """Prompt of all pages followed by the question, in the model's chat format."""

    def text_inputs(self, context: str, question: str) -> ModelInputs:
        """Prompt of the context as plain text followed by the question (no image)."""
        return self._tokenize([{"type": "text", "text": f"{context}\n\n{question}"}], context, [])

    @abstractmethod
    def _tokenize(self, content: list[dict], context: str | None, image_token_counts: list[int]) -> ModelInputs:
        """Chat-format ``content`` (image parts expanded to ``image_token_counts`` tokens) into inputs."""

    def encode_prompt(self, prompt: str, context: str | None,
                      add_special_tokens: bool = False) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """``prompt`` (already in chat format, image tokens expanded) as (1, tokens) ids, and for each token its
        character span in ``context`` ((-1, -1) outside it): where the needle's characters sit in the prompt."""
        encoded = self.tokenizer(prompt, return_offsets_mapping=True, add_special_tokens=add_special_tokens)
        return torch.tensor([encoded["input_ids"]]), context_offsets(prompt, encoded["offset_mapping"], context)

    def set_text_attention(self, implementation: str) -> None:
        """Route the language model's attention (not the vision tower's) through ``implementation``."""
        self.model.set_attn_implementation({"text_config": implementation, "vision_config": "sdpa"})

    def attention_modules(self) -> list[torch.nn.Module | None]:
        """The language model's self-attention modules, in layer order; ``None`` for a layer without softmax
        attention (the linear-attention layers of a hybrid model such as Qwen3.5)."""
        return [getattr(layer, "self_attn", None) for layer in self.model.model.language_model.layers]

    @property
    def scoreable_layers(self) -> list[int]:
        """Layers with attention probabilities to read (and heads to mask): those with a self-attention module."""
        return [i for i, module in enumerate(self.attention_modules()) if module is not None]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def generate(self, inputs: ModelInputs, max_new_tokens: int = 32) -> list[int]:
        """Greedy decoding; returns the new token ids (without the prompt)."""
        return self.generate_batch([inputs], max_new_tokens)[0]

    @property
    def pad_token_id(self) -> int:
        pad = getattr(self.tokenizer, "pad_token_id", None)
        if pad is None:
            pad = self.model.config.get_text_config().pad_token_id
        if pad is None:
            pad = self.eos_token_ids[0]
        return int(pad)

    @property
    def eos_token_ids(self) -> list[int]:
        eos = self.model.generation_config.eos_token_id
        return [] if eos is None else [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])]

    def generate_batch(self, batch: list[ModelInputs], max_new_tokens: int = 32) -> list[list[int]]:
        """Greedy decoding of several prompts together (left padding, see :func:`collate`); returns each
        sample's new token ids, cut after its own end-of-sequence token as a run of that sample alone stops."""
        if not batch:
            return []
        tensors = {k: v.to(self.device) for k, v in collate(batch, self.pad_token_id).items()}
        # use_cache=True whatever the checkpoint says (published SmolVLM2 configs say false, which generate would
        # inherit): without the cache every step re-runs the whole sequence, so capture sees no one-row decode steps.
        with torch.no_grad():
            output = self.model.generate(**tensors, max_new_tokens=max_new_tokens, do_sample=False,
                                         num_beams=1, temperature=None, top_p=None, top_k=None,
                                         pad_token_id=self.pad_token_id, use_cache=True)
        new = output[:, tensors["input_ids"].shape[1] :].tolist()
        eos = set(self.eos_token_ids)
        for i, tokens in enumerate(new):
            stop = next((k for k, t in enumerate(tokens) if t in eos), None)
            if stop is not None:
                new[i] = tokens[: stop + 1]
        return new

    def decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)
