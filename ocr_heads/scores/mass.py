"""What the attention-mass scores share (``ocr_mass``, ``first_token_mass``, ``image_mass``, ``question_mass``):
where the answer's tiles and the image sit in the prompt, the one producing-row probe the decode-row mass scores
all declare, and the pure rule that sums a row's probabilities over a target.

The three decode-row mass scores declare the *same* probe (:func:`producing_probe`: every producing row's
probability on each of the answer's tiles, and its mass on the whole image), so a step2 run of several of them
computes it once; each reads its part.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ocr_heads.scores.base import Settings
from ocr_heads.scores.registered.ocr import answer_targets

if TYPE_CHECKING:
    from ocr_heads.attention.probes import ImageAttention
    from ocr_heads.data.samples import Sample
    from ocr_heads.models.base import ModelInputs

IMAGE_GROUP = "image"  # the producing probe's group of every image token


def answer_keys(targets: Sequence[set[int]]) -> tuple[int, ...]:
    """Every prompt position that shows some answer character (the union of the characters' targets), sorted."""
    return tuple(sorted(set().union(*targets))) if targets else ()


def image_positions(inputs: ModelInputs) -> tuple[int, ...]:
    """Every image token's prompt position, page after page."""
    return tuple(p for tokens in inputs.image_tokens for p in tokens.positions)


def producing_probe(sample: Sample, inputs: ModelInputs, settings: Settings) -> ImageAttention:
    """Each producing row's probability on every tile of the answer (float32, all layers and heads) and its mass
    on the whole image: memory steps x layers x heads x answer tiles, never the prompt squared."""
    import torch  # here: listing scores imports no torch

    from ocr_heads.attention.probes import ImageAttention

    keys = answer_keys(answer_targets(sample, inputs, settings))
    return ImageAttention(keys, ((IMAGE_GROUP, image_positions(inputs)),), dtype=torch.float32)


def on_target(probabilities: np.ndarray, keys: Sequence[int], target: set[int]) -> np.ndarray:
    """The probability summed over ``target`` (prompt positions, all among ``keys``), float64; ``probabilities``
    has the positions ``keys`` on its last axis. NaN (a layer without attention rows) reads as 0: it never
    attends to the target, as the argmax scores count it."""
    column = {key: i for i, key in enumerate(keys)}
    picked = np.asarray(probabilities, dtype=np.float64)[..., [column[t] for t in sorted(target)]]
    return np.nan_to_num(picked.sum(-1), nan=0.0)


def token_target(targets: Sequence[set[int]], chars: tuple[int, int]) -> set[int]:
    """The tiles of the answer characters ``chars`` ([start, end)) spell: the union of their targets."""
    return set().union(*targets[chars[0] : chars[1]])
