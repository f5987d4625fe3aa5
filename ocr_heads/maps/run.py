"""One ``look``: generate greedily once under capture with the :class:`~ocr_heads.attention.probes.ImageAttention`
probe, and keep every producing row's attention on every image token, in prompt order, with the page box of each.

Step ``s`` of the maps is the row that produced generated token ``s`` (step 0: the prefill's last row).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ocr_heads.attention import StepRecord, capture
from ocr_heads.attention.probes import ImageAttention
from ocr_heads.data.samples import Sample
from ocr_heads.models import ModelAdapter, ModelInputs
from ocr_heads.pipeline.sample_scoring import generated_pieces
from ocr_heads.scores.base import Settings
from ocr_heads.scores.registered.ocr import answer_targets

logger = logging.getLogger(__name__)

SINK = "sink"
QUESTION = "question"
EVIDENCE = "evidence"
TEXT = "text"  # the prompt's other text tokens (chat template, system prompt, image delimiters)


@dataclass(frozen=True)
class ImageTokenOrder:
    """The prompt's image tokens in prompt order: the last axis of the maps."""

    positions: list[int]  # prompt position of each
    tiles: np.ndarray  # (tokens, 4) its box in page pixels [x0, y0, x1, y1]; NaN: shows no page pixels
    pages: list[int]  # the page each belongs to

    @classmethod
    def of(cls, inputs: ModelInputs) -> ImageTokenOrder:
        runs = sorted(inputs.image_tokens, key=lambda tokens: tokens.start)  # a page may be several runs
        if not runs:
            raise ValueError("the prompt has no image tokens")
        return cls([p for tokens in runs for p in tokens.positions],
                   np.concatenate([tokens.tile_boxes for tokens in runs]).astype(np.float64),
                   [tokens.page for tokens in runs for _ in range(tokens.count)])

    def column(self) -> dict[int, int]:
        """Prompt position -> its index on the maps' last axis."""
        return {position: i for i, position in enumerate(self.positions)}


@dataclass(frozen=True)
class Look:
    """What one look produced."""

    inputs: ModelInputs
    question: str
    generated: list[int]
    pieces: list[str]  # the text each generated token adds, one per step
    answer: str
    tokens: ImageTokenOrder
    attention: torch.Tensor  # (steps, layers, heads, image tokens); NaN in layers without attention rows
    groups: dict[str, list[int]]  # name -> prompt positions
    group_mass: dict[str, torch.Tensor]  # name -> (steps, layers, heads)
    record: StepRecord  # the producing rows' argmax and sink (the OCR score's view)
    targets: list[set[int]] | None  # per answer character, the prompt positions of its tiles (step1 samples)


def text_positions(adapter: ModelAdapter, input_ids: list[int], text: str) -> list[int]:
    """Prompt positions of the tokens that spell the last occurrence of ``text`` (found by each token's decoded text,
    so any tokenizer works); [] when it is not found."""
    pieces = [adapter.tokenizer.decode([token]) for token in input_ids]
    joined = "".join(pieces)
    start = joined.rfind(text.strip())
    if not text.strip() or start < 0:
        return []
    end, positions, cursor = start + len(text.strip()), [], 0
    for position, piece in enumerate(pieces):
        if cursor < end and cursor + len(piece) > start:
            positions.append(position)
        cursor += len(piece)
    return positions


def token_groups(adapter: ModelAdapter, inputs: ModelInputs, question: str,
                 targets: list[set[int]] | None) -> dict[str, list[int]]:
    """Named sets of prompt positions for the per-step mass: each page, the evidence tiles, the question, the
    sink (position 0) and the rest of the text."""
    groups: dict[str, list[int]] = {}
    for tokens in sorted(inputs.image_tokens, key=lambda t: t.start):
        groups.setdefault(f"image_{tokens.page}", []).extend(tokens.positions)
    image = {p for positions in groups.values() for p in positions}
    if targets:
        groups[EVIDENCE] = sorted(set().union(*targets))
    groups[QUESTION] = [p for p in text_positions(adapter, inputs.input_ids[0].tolist(), question) if p not in image]
    if not groups[QUESTION]:
        logger.warning("the question's tokens were not found in the prompt: its group is empty")
    groups[SINK] = [0]
    taken = image | set(groups[QUESTION]) | {0}
    groups[TEXT] = [p for p in range(inputs.prompt_length) if p not in taken]
    return groups


def check_context(adapter: ModelAdapter, inputs: ModelInputs, max_new_tokens: int) -> None:
    """ValueError when prompt + answer do not fit the model's context."""
    context = getattr(adapter.config.get_text_config(), "max_position_embeddings", None)
    if context is not None and inputs.prompt_length + max_new_tokens > context:
        raise ValueError(f"the prompt is {inputs.prompt_length} tokens; with --max_new_tokens {max_new_tokens} it "
                         f"exceeds the model's context of {context} tokens: shorten the question or use fewer pages")


def look(adapter: ModelAdapter, pages: list[Image.Image], question: str, max_new_tokens: int = 32,
         dtype: torch.dtype = torch.float16, sample: Sample | None = None) -> Look:
    """Generate the answer to ``question`` about ``pages`` greedily, recording the maps. With a step1 ``sample``
    (its pages and question), the evidence tiles of each answer character are located too."""
    inputs = adapter.image_inputs(pages, question)
    check_context(adapter, inputs, max_new_tokens)
    tokens = ImageTokenOrder.of(inputs)
    targets = answer_targets(sample, inputs, Settings()) if sample is not None else None
    groups = token_groups(adapter, inputs, question, targets)
    probe = ImageAttention(tuple(tokens.positions), groups, dtype=dtype)
    with capture(adapter) as recorder:
        recorder.reset(inputs.prompt_length, [probe])
        generated = adapter.generate(inputs, max_new_tokens)
        result = recorder.probe_result(ImageAttention)
        record = recorder.result()
    pieces = generated_pieces(adapter, generated)
    return Look(inputs, question, generated, pieces, adapter.decode(generated), tokens, result.attention, groups,
                result.group_mass, record, targets)

