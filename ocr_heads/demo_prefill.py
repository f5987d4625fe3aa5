"""The demo's prefill-read rows: masking the top heads of the ``prefill`` score, next to the top OCR heads
and the union of both, each against as many random heads (5 seeds), on image passkeys.

The toy model reads digits 1-2 with layer-1 heads at the rows that produce them (what the OCR score
credits) and digits 3-5 with layer-0 heads from the question's rows during the prefill (what the
prefill score credits; docs/toy_model.md). Masking either set should break exact match; these rows
show how much each does beside random heads of the same size.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import TYPE_CHECKING

from ocr_heads.selection import choose_heads, load_head_ranking

if TYPE_CHECKING:
    from ocr_heads.demo import Masking


def prefill_masking(top: Masking, union: Masking, ocr_path: Path, prefill_path: Path, k: int, base: float,
                    random_k: float | None, seeds: tuple[int, ...]) -> dict | None:
    """Image EM with the top-k prefill heads masked, and with the union of the top-k OCR and top-k prefill
    heads masked, against ``len(union)`` random heads (mean over ``seeds``). ``top`` and ``union`` write to
    separate folders (a run's file name holds its head set and k, not whose heads). ``base``: the unmasked
    image EM; ``random_k``: the table's k-random image EM (the control for the top-k prefill heads)."""
    prefill = load_head_ranking(prefill_path)[:k]
    if not prefill or not k:
        return None
    ocr = load_head_ranking(ocr_path)[:k]
    both = ocr + [head for head in prefill if head not in ocr]
    prefill_em = top.em("passkey", "image", "top", prefill, heads_path=prefill_path)
    union_em = union.em("passkey", "image", "top", both)
    randoms = [union.em("passkey", "image", "random", choose_heads("random", len(both), [], union.layers,
                                                                    union.heads, seed), seed) for seed in seeds]
    random_union = statistics.mean(randoms)
    return {"k": k, "baseline_image_em": base,
            "prefill_top_k": {"heads": prefill, "image_em": prefill_em, "image_drop": base - prefill_em},
            "random_k_image_em": random_k,
            "union": {"heads": both, "image_em": union_em, "image_drop": base - union_em},
            "random_union": {"k": len(both), "image_em": random_union, "image_drop": base - random_union,
                             "seeds": dict(zip(seeds, randoms, strict=True))}}


def prefill_lines(row: dict | None) -> list[str]:
    """Headline lines for :func:`prefill_masking`'s result (image EM; drops in points)."""
    if row is None:
        return ["prefill-read heads: none selected (no masking rows)"]
    k, union, seeds = row["k"], row["union"], len(row["random_union"]["seeds"])
    lines = [f"prefill heads masked: {', '.join(row['prefill_top_k']['heads'])}; union: {', '.join(union['heads'])}",
             f"{'heads masked':<34}{'image EM':>10}{'image drop':>12}",
             f"{'none':<34}{row['baseline_image_em']:>10.3f}"]
    cells = [(f"top-{k} prefill", row["prefill_top_k"]["image_em"])]
    if row["random_k_image_em"] is not None:
        cells.append((f"{k} random (mean of 5 seeds)", row["random_k_image_em"]))
    cells += [(f"top-{k} OCR + top-{k} prefill", union["image_em"]),
              (f"{row['random_union']['k']} random (mean of {seeds} seeds)", row["random_union"]["image_em"])]
    for label, em in cells:
        lines.append(f"{label:<34}{em:>10.3f}{100 * (row['baseline_image_em'] - em):>+11.0f}p")
    lines.append(f"{row['random_union']['k']} random heads per seed (image EM): "
                 + ", ".join(f"seed {seed} {em:.2f}" for seed, em in row["random_union"]["seeds"].items()))
    return lines
