"""Heads that look at the answer: for each answer character of a step1 sample, the heads with the most attention
mass on that character's evidence tiles at the step that produced it, next to the heads whose argmax lands there
(the OCR score's hits)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ocr_heads.core.heads import head_name
from ocr_heads.maps.run import Look
from ocr_heads.scores.rules import align_answer_tokens

TOP = 5


@dataclass(frozen=True)
class CharHeads:
    """One answer character: where it was produced and which heads read it."""

    char: str
    index: int  # in the answer
    step: int  # the producing row
    tiles: list[int]  # its evidence tiles, as indices on the maps' last axis
    mass: list[tuple[str, float]]  # the heads with the most mass on those tiles, best first
    argmax: list[str]  # the heads whose argmax over the prompt lies on them (the OCR score's hits)

    def as_json(self) -> dict:
        return {"char": self.char, "index": self.index, "step": self.step, "tiles": self.tiles,
                "mass_heads": [{"head": name, "mass": round(mass, 6)} for name, mass in self.mass],
                "argmax_heads": self.argmax}


def answer_heads(seen: Look, answer: str, top: int = TOP) -> list[CharHeads]:
    """Per answer character found in the output (aligned by decoded text, as the OCR score does)."""
    if seen.targets is None:
        return []
    column = seen.tokens.column()
    attention = seen.attention.float().numpy()
    found = []
    for token in align_answer_tokens(seen.pieces, answer):
        for index in range(*token.chars):
            targets = sorted(seen.targets[index])
            tiles = [column[p] for p in targets if p in column]
            mass = np.nan_to_num(attention[token.index][:, :, tiles].sum(-1), nan=-1.0)  # (layers, heads)
            order = np.argsort(-mass, axis=None, kind="stable")[:top]
            best = [(head_name(*divmod(int(i), mass.shape[1])), float(mass.flat[i]))
                    for i in order if mass.flat[i] >= 0]
            hits = np.isin(seen.record.argmax[token.index].numpy(), targets) if targets else np.zeros_like(mass, bool)
            argmax = [head_name(int(layer), int(head)) for layer, head in zip(*np.nonzero(hits), strict=True)]
            found.append(CharHeads(answer[index], index, token.index, tiles, best, argmax))
    return found


def report_lines(chars: list[CharHeads]) -> list[str]:
    """For people: one line per answer character, both views of reading side by side."""
    lines = ["heads that look at the answer (mass on the character's tiles at the step that produced it | "
             "argmax on them, the OCR score's hits):"]
    for char in chars:
        mass = ", ".join(f"{name} {value:.2f}" for name, value in char.mass) or "-"
        argmax = ", ".join(char.argmax[:TOP]) + (f" (+{len(char.argmax) - TOP})" if len(char.argmax) > TOP else "")
        lines.append(f"  {char.char!r} (step {char.step}, {len(char.tiles)} tiles): {mass} | {argmax or '-'}")
    return lines
