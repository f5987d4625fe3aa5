"""Which heads a map shows: ``--heads`` (names, a step3 head list, ``top:N:SCOREFILE``) or ``--layers A-B``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ocr_heads.core.heads import check_heads_exist, head_name, parse_head
from ocr_heads.scores.selection import load_head_ranking

HEADS_HELP = ("heads to map: l{L}_h{H} names comma-separated, a step3 head list (JSON), or top:N:SCOREFILE (the N "
              "best heads of a score or head file); the map is the mean over the set (--per_head: one map each)")


@dataclass(frozen=True)
class HeadSet:
    """A set of heads whose mean map is drawn, and its label for titles and file names."""

    label: str
    heads: tuple[tuple[int, int], ...]  # (layer, head)

    def mean_map(self, attention: np.ndarray, step: int) -> np.ndarray:
        """(image tokens,) mean probability over the set at ``step``; layers without attention rows are skipped."""
        rows = np.stack([attention[step, layer, head] for layer, head in self.heads]).astype(np.float64)
        kept = rows[~np.isnan(rows).any(axis=1)]
        if not len(kept):
            raise ValueError(f"{self.label}: none of its heads is in a layer with attention rows")
        return kept.mean(axis=0)


def parse_heads(spec: str, num_layers: int, num_heads: int) -> list[str]:
    """Head names of a ``--heads`` SPEC, checked against the model; ValueError for a head it does not have."""
    spec = spec.strip()
    if spec.startswith("top:"):
        _, count, path = spec.split(":", 2)
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"--heads {spec}: expected top:N:SCOREFILE with N >= 1")
        names = load_head_ranking(path)[: int(count)]
    elif spec.endswith(".json") or Path(spec).is_file():
        names = load_head_ranking(spec)
    else:
        names = [name.strip() for name in spec.split(",") if name.strip()]
        for name in names:
            parse_head(name)
    if not names:
        raise ValueError(f"--heads {spec}: no heads")
    check_heads_exist(names, num_layers, num_heads)
    return names


def parse_layers(spec: str, num_layers: int) -> tuple[int, int]:
    """``A-B`` (or ``A``) -> (A, B), inclusive, checked against the model."""
    first, _, last = spec.partition("-")
    if not first.strip().isdigit() or (last and not last.strip().isdigit()):
        raise ValueError(f"--layers {spec}: expected A-B, e.g. 0-3")
    low, high = int(first), int(last or first)
    if low > high or high >= num_layers:
        raise ValueError(f"--layers {spec}: the model has layers 0-{num_layers - 1}")
    return low, high


def head_sets(heads: str | None, layers: str | None, per_head: bool, num_layers: int,
              num_heads: int) -> list[HeadSet]:
    """The maps to draw for each chosen token: the ``--heads`` set (or each of its heads), the ``--layers`` mean,
    or, with neither, the mean over every head."""
    sets = []
    if heads:
        names = parse_heads(heads, num_layers, num_heads)
        pairs = [parse_head(name) for name in names]
        if per_head:
            sets += [HeadSet(head_name(*pair), (pair,)) for pair in pairs]
        else:
            label = names[0] if len(names) == 1 else f"mean of {len(names)} heads"
            sets.append(HeadSet(label, tuple(pairs)))
    if layers:
        low, high = parse_layers(layers, num_layers)
        sets.append(HeadSet(f"mean of layers {low}-{high}",
                            tuple((layer, head) for layer in range(low, high + 1) for head in range(num_heads))))
    if not sets:
        sets.append(HeadSet("mean of all heads",
                            tuple((layer, head) for layer in range(num_layers) for head in range(num_heads))))
    return sets


def parse_tokens(spec: str, steps: int) -> list[int]:
    """``--tokens 0,2,5``: generated-token indices (steps), checked against the answer's length."""
    chosen = []
    for part in spec.split(","):
        if not part.strip().isdigit() or int(part) >= steps:
            raise ValueError(f"--tokens {spec}: {part.strip()!r} is not a step of the answer (0-{steps - 1})")
        chosen.append(int(part))
    return chosen
