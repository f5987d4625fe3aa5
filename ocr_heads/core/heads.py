"""One naming scheme for decoder heads: ``l{layer}_h{head}``, 0-based, everywhere."""

from __future__ import annotations

import re
from collections.abc import Iterable

_HEAD_RE = re.compile(r"^l(\d+)_h(\d+)$")


def head_name(layer: int, head: int) -> str:
    return f"l{layer}_h{head}"


def parse_head(name: str) -> tuple[int, int]:
    """``"l3_h1"`` -> ``(3, 1)``; a clear ValueError for anything else."""
    match = _HEAD_RE.match(name.strip())
    if match is None:
        raise ValueError(f"not a head name: {name!r} (expected 'l<layer>_h<head>', e.g. 'l3_h1')")
    return int(match.group(1)), int(match.group(2))


def all_heads(num_layers: int, num_heads: int) -> list[str]:
    """Every head of a model, layer-major (the order of the authors' score files)."""
    return [head_name(layer, head) for layer in range(num_layers) for head in range(num_heads)]


def check_heads_exist(names: Iterable[str], num_layers: int, num_heads: int) -> None:
    """Raise ValueError naming the first head the model does not have."""
    for name in names:
        layer, head = parse_head(name)
        if layer >= num_layers or head >= num_heads:
            raise ValueError(
                f"head {name} does not exist in a model with {num_layers} layers x {num_heads} heads"
            )


def heads_by_layer(names: Iterable[str]) -> dict[int, list[int]]:
    """Group head names by layer: ``["l1_h0", "l1_h3"]`` -> ``{1: [0, 3]}``."""
    grouped: dict[int, list[int]] = {}
    for name in names:
        layer, head = parse_head(name)
        grouped.setdefault(layer, []).append(head)
    return grouped
