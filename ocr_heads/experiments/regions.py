"""Named key groups of one sample, in its own prompt positions: the keys a path-specific edit cuts a head off.

    image     every image-token position (all pages, thumbnails and crops, row separators included)
    text      every prompt position that is not an image token (the sink, the chat template's special tokens, the
              vision start/end markers, the question)
    evidence  the image tokens that cover the answer's characters on their page (step1/passkey data: the pixel box
              of every answer character; a tile covers a character when their overlap exceeds 10% of its box, the
              paper's rule, :func:`ocr_heads.scores.geometry.covering_tiles`)
    sink      own position 0, the first real token

Positions are the sample's own (an unpadded prompt's); :class:`ocr_heads.attention.reweighting.KeySet` maps them
past each sample's left padding. Torch-free: the experiment registry lists experiments without loading a model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from ocr_heads.scores.geometry import covering_tiles

if TYPE_CHECKING:
    from ocr_heads.models.base import ModelInputs

SINK = 0


def image_positions(inputs: ModelInputs) -> list[int]:
    return sorted(p for tokens in inputs.image_tokens for p in tokens.positions)


def text_positions(inputs: ModelInputs) -> list[int]:
    image = set(image_positions(inputs))
    return [p for p in range(inputs.prompt_length) if p not in image]


def character_positions(inputs: ModelInputs, page: int, boxes: Sequence[Sequence[float]]) -> list[int]:
    """Image-token positions of page ``page`` (every run of it: a page and its crops) covering any of ``boxes``
    (pixel boxes on the original page)."""
    found: set[int] = set()
    for tokens in inputs.image_tokens:
        if tokens.page != page:
            continue
        for box in boxes:
            found.update(tokens.start + index for index in covering_tiles(box, tokens.tile_boxes))
    return sorted(found)


def evidence_positions(inputs: ModelInputs, evidence: Mapping[str | int, Sequence[Sequence[float]]] | None,
                       what: str) -> list[int]:
    """Image-token positions covering the answer's characters, from step1's ``evidence`` ({page: [box per answer
    character]}). ValueError when the sample has no evidence boxes (a dataset without them)."""
    if not evidence:
        raise ValueError(f"{what}: no evidence boxes (only step1/passkey samples have them)")
    found: set[int] = set()
    for page, boxes in evidence.items():
        found.update(character_positions(inputs, int(page), boxes))
    return sorted(found)
