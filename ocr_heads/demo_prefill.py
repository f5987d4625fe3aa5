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


def prefill_masking(top: Masking, union: Masking, ocr_path: Path, prefill_path: Path, k: int, k_prefill: int,
                    base: float, random_k: float | None, seeds: tuple[int, ...]) -> dict | None:
    """Held-out image EM with the top prefill heads masked, at the OCR rows' ``k`` (control: the table's k
    random heads, ``random_k``) and at ``k_prefill`` (chosen on the calibration split as the OCR k is;
    control: as many random heads), and with the union of the top-k OCR and top-``k_prefill`` prefill heads
    masked (control: as many random heads). Controls are means over ``seeds``. ``top`` and ``union`` write to
    separate folders (a run's file name holds its head set and k, not whose heads); ``base``: unmasked EM."""
    ranking = load_head_ranking(prefill_path)
    if not ranking or not k:
        return None

    def masked(m: Masking, heads: list[str], path: Path | None = None) -> dict:
        em = m.em("passkey", "image", "top", heads, heads_path=path)
        return {"heads": heads, "image_em": em, "image_drop": base - em}

    def control(m: Masking, size: int) -> dict:
        ems = [m.em("passkey", "image", "random", choose_heads("random", size, [], m.layers, m.heads, seed), seed)
               for seed in seeds]
        mean = statistics.mean(ems)
        return {"k": size, "image_em": mean, "image_drop": base - mean, "seeds": dict(zip(seeds, ems, strict=True))}

    both = load_head_ranking(ocr_path)[:k]
    both += [head for head in ranking[:k_prefill] if head not in both]
    return {"k": k, "k_prefill": k_prefill, "baseline_image_em": base, "random_k_image_em": random_k,
            "prefill_top_k": masked(top, ranking[:k], prefill_path),
            "prefill_top_k_prefill": masked(top, ranking[:k_prefill], prefill_path),
            "random_k_prefill": control(top, k_prefill),
            "union": masked(union, both), "random_union": control(union, len(both))}


def prefill_lines(row: dict | None) -> list[str]:
    """Headline lines for :func:`prefill_masking`'s result (image EM; drops in points)."""
    if row is None:
        return ["prefill-read heads: none selected (no masking rows)"]
    k, kp, union = row["k"], row["k_prefill"], row["union"]
    seeds = len(row["random_union"]["seeds"])
    lines = [f"k = {kp} for the prefill heads, chosen on the calibration split as k is for the OCR heads",
             f"prefill heads masked: {', '.join(row['prefill_top_k_prefill']['heads'])}; union: "
             f"{', '.join(union['heads'])}",
             f"{'heads masked':<34}{'image EM':>10}{'image drop':>12}",
             f"{'none':<34}{row['baseline_image_em']:>10.3f}"]
    cells = [(f"top-{k} prefill", row["prefill_top_k"]["image_em"])]
    if row["random_k_image_em"] is not None:
        cells.append((f"{k} random (mean of {seeds} seeds)", row["random_k_image_em"]))
    cells += [(f"top-{kp} prefill", row["prefill_top_k_prefill"]["image_em"]),
              (f"{kp} random (mean of {seeds} seeds)", row["random_k_prefill"]["image_em"]),
              (f"top-{k} OCR + top-{kp} prefill", union["image_em"]),
              (f"{row['random_union']['k']} random (mean of {seeds} seeds)", row["random_union"]["image_em"])]
    for label, em in cells:
        lines.append(f"{label:<34}{em:>10.3f}{100 * (row['baseline_image_em'] - em):>+11.0f}p")
    for key in ("random_k_prefill", "random_union"):
        lines.append(f"{row[key]['k']} random heads per seed (image EM): "
                     + ", ".join(f"seed {seed} {em:.2f}" for seed, em in row[key]["seeds"].items()))
    return lines
