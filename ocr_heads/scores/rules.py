"""OCR and retrieval scores from recorded per-step argmax positions (design §1).

Pure functions: they take the generated ids, the recorder's output and where things sit in the
prompt, and return per-head values. No model runs here, so every rule is testable on a hand-built
case.

Alignment ("which attention row is an event"):
- ``produce`` (default): the token at generated index k was produced by the row of query P+k-1,
  i.e. recorded step k (the prefill's last row for k = 0).
- ``authors``: the released code reads the row of the token itself (query P+k = step k+1; the last
  generated token has none), and for text also counts answer-token positions inside the prompt.
  For OCR it also keeps tiles above 0.1 percent overlap on int-truncated resized coordinates
  (:func:`ocr_heads.scores.geometry.authors_covering_tiles`), targets the first answer copy only
  (:func:`scored_occurrences`), takes the argmax over prompt positions [0, P-1) (the recorder's
  ``exclude_last_prompt``) and computes recall on the bare answer's ids.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ocr_heads.core.kinds import Alignment
from ocr_heads.scores.geometry import AUTHORS_OVERLAP, DEFAULT_OVERLAP, authors_covering_tiles, covering_tiles

if TYPE_CHECKING:  # pure functions: importing them (the score registry does) must not load torch
    import torch

    from ocr_heads.models.base import ImageTokens

ALIGNMENTS = tuple(Alignment)  # the --alignment choices


def overlap_threshold(alignment: Alignment, overlap: float | None = None) -> float:
    """The tile-overlap threshold (fraction of a character's box): ``overlap`` when given, else the
    rule's own: the paper's 10% (``produce``) or the released code's 0.1 percent (``authors``)."""
    if overlap is not None:
        return overlap
    return AUTHORS_OVERLAP if alignment == Alignment.AUTHORS else DEFAULT_OVERLAP


def longest_common_run(a: Sequence, b: Sequence) -> tuple[int, int, int]:
    """Longest common contiguous run of two sequences: (length, start in a, start in b)."""
    best = (0, 0, 0)
    previous = [0] * (len(b) + 1)
    for i in range(1, len(a) + 1):
        current = [0] * (len(b) + 1)
        for j in range(1, len(b) + 1):
            if a[i - 1] == b[j - 1]:
                current[j] = previous[j - 1] + 1
                if current[j] > best[0]:
                    best = (current[j], i - current[j], j - current[j])
        previous = current
    return best


def recall(answer_ids: Sequence[int], generated_ids: Sequence[int]) -> float:
    """Longest common contiguous run of answer token ids in the output / number of answer token ids."""
    if not answer_ids:
        return 0.0
    return longest_common_run(answer_ids, generated_ids)[0] / len(answer_ids)


def _ids_added(encode: Callable[[str], list[int]], prefix: str, answer: str) -> list[int]:
    """The ids that ``answer`` adds after ``prefix``: the tail of ``encode(prefix + answer)`` past the
    prefix's own ids (a token merging the prefix's last characters with the answer counts as the answer's)."""
    before, through = encode(prefix), encode(prefix + answer)
    common = 0
    while common < min(len(before), len(through)) and before[common] == through[common]:
        common += 1
    return through[common:]


def answer_id_variants(encode: Callable[[str], list[int]], answer: str, output_text: str) -> list[list[int]]:
    """The token ids the answer can have in an output: bare, after a space, and as the output spells it.

    BPE vocabularies such as Qwen2's give a word after a space its own token (" e" is not "e",
    " blue" is not "blue"), so the bare answer's ids need not occur in a correct output. Each variant
    holds only the ids the answer's characters produce: after a space, a lone space token (Qwen2
    splits " 48213" into " " and five digits) is not part of the answer. The in-context variant
    tokenizes the output up to the end of the answer's first occurrence (covers quotes, newlines,
    any prefix).
    """
    variants = [encode(answer), _ids_added(encode, " ", answer)]
    start = output_text.find(answer)
    if answer and start >= 0:
        variants.append(_ids_added(encode, output_text[:start], answer))
    unique: list[list[int]] = []
    for ids in variants:
        if ids and ids not in unique:
            unique.append(list(ids))
    return unique


def best_recall(variants: Sequence[Sequence[int]], generated_ids: Sequence[int]) -> float:
    """:func:`recall` under the answer tokenization that fits the output best (see :func:`answer_id_variants`)."""
    return max((recall(ids, generated_ids) for ids in variants), default=0.0)


@dataclass(frozen=True)
class AnswerToken:
    index: int  # position in the generated ids
    chars: tuple[int, int]  # the answer characters it spells, [start, end)


def align_answer_tokens(token_texts: Sequence[str], answer: str) -> list[AnswerToken]:
    """Generated tokens that spell (part of) the answer, with the answer characters each covers.

    Alignment is by decoded text: the longest common run of characters between the output and the
    answer is located, and every token whose text overlaps it maps to those answer characters.
    """
    bounds, cursor = [], 0
    for text in token_texts:
        bounds.append((cursor, cursor + len(text)))
        cursor += len(text)
    output = "".join(token_texts)
    length, out_start, ans_start = longest_common_run(output, answer)
    if length == 0:
        return []
    shift = ans_start - out_start
    tokens = []
    for index, (start, end) in enumerate(bounds):
        lo, hi = max(start, out_start), min(end, out_start + length)
        if lo < hi:
            tokens.append(AnswerToken(index, (lo + shift, hi + shift)))
    return tokens


def event_rows(answer_tokens: list[AnswerToken], num_steps: int, alignment: Alignment) -> list[tuple[AnswerToken, int]]:
    """Pair each answer token with the recorded step whose row is its event."""
    if alignment not in ALIGNMENTS:
        raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")
    offset = 0 if alignment == Alignment.PRODUCE else 1
    return [(tok, tok.index + offset) for tok in answer_tokens if tok.index + offset < num_steps]


def event_chars(answer: str, answer_tokens: list[AnswerToken], num_steps: int, alignment: Alignment) -> list[str]:
    """Per event row (as :func:`event_rows` pairs them), the answer characters its token spells."""
    return [answer[slice(*token.chars)] for token, _ in event_rows(answer_tokens, num_steps, alignment)]


def scored_occurrences(occurrences: list[dict[int, list[list[float]]]], alignment: Alignment) -> list[dict]:
    """The answer occurrences whose tiles are targets. ``produce``: every answer slot of the needle
    (a passkey needle states the key twice and either copy may be read). ``authors``: the first only,
    as the released step1 deletes "{answer} is the pass key." before rendering, leaving one copy."""
    return occurrences[:1] if alignment == Alignment.AUTHORS else occurrences


def char_targets(
    evidence: list[dict[int, list[list[float]]]],
    image_tokens: list[ImageTokens],
    threshold: float = DEFAULT_OVERLAP,
    rule: Alignment = Alignment.PRODUCE,
) -> list[set[int]]:
    """For each answer character, the prompt positions of the image tokens covering it (all occurrences).

    ``rule``: the alignment whose tile test applies: ``produce`` uses the exact overlap in page pixels
    (:func:`covering_tiles`); ``authors`` the released test on int-truncated resized coordinates
    (:func:`authors_covering_tiles`).
    """
    cover = authors_covering_tiles if rule == Alignment.AUTHORS else covering_tiles
    by_page: dict[int, list[ImageTokens]] = {}
    for tokens in image_tokens:  # a page may have several runs (Gemma 3's pan-and-scan crops)
        by_page.setdefault(tokens.page, []).append(tokens)
    targets: list[set[int]] = []
    for occurrence in evidence:
        flat = [(page, box) for page in sorted(occurrence) for box in occurrence[page]]
        if not targets:
            targets = [set() for _ in flat]
        if len(flat) != len(targets):
            raise ValueError("answer occurrences have different numbers of character boxes")
        for char, (page, box) in enumerate(flat):
            if page not in by_page:
                raise ValueError(f"evidence on page {page}, but the prompt has {len(image_tokens)} pages")
            for tokens in by_page[page]:
                targets[char].update(tokens.start + t for t in cover(box, tokens.tile_boxes, threshold))
    return targets


def ocr_values(
    argmax: torch.Tensor,
    answer_tokens: list[AnswerToken],
    targets: list[set[int]],
    sample_recall: float,
    alignment: Alignment = Alignment.PRODUCE,
) -> np.ndarray:
    """Per event and head: ``hit * recall``; returns (events, layers, heads).

    ``argmax`` is the recorder's (steps, layers, heads). A head hits when its argmax lies among the
    image tokens covering the characters that the event's token spells.
    """
    events = event_rows(answer_tokens, argmax.shape[0], alignment)
    values = np.zeros((len(events), *argmax.shape[1:]), dtype=np.float64)
    for row, (token, step) in enumerate(events):
        target = set().union(*targets[token.chars[0] : token.chars[1]])
        if target:
            hit = np.isin(argmax[step].numpy(), sorted(target))
            values[row] = hit * sample_recall
    return values


def retrieval_value(
    argmax: torch.Tensor,
    prompt_ids: Sequence[int],
    generated_ids: Sequence[int],
    answer_tokens: list[AnswerToken],
    needle_positions: set[int],
) -> np.ndarray:
    """Per head, the fraction of answer tokens whose producing row's argmax lies in the needle *and*
    holds the same token id as the one generated; (layers, heads). 0 when none generated.

    Wu et al.'s copy-paste test, scored differently (README, "Retrieval score vs Wu et al."): events
    are answer tokens only (theirs: every generated token), the denominator is the answer tokens
    generated (theirs: the needle's length in tokens), and the argmax runs over prompt positions only
    (theirs: the whole row, where an argmax on a generated token is a miss).
    """
    events = event_rows(answer_tokens, argmax.shape[0], Alignment.PRODUCE)
    if not events:
        return np.zeros(argmax.shape[1:], dtype=np.float64)
    prompt = np.asarray(prompt_ids)
    in_needle = np.zeros(len(prompt), dtype=bool)
    in_needle[sorted(p for p in needle_positions if p < len(prompt))] = True
    hits = np.zeros(argmax.shape[1:], dtype=np.float64)
    for token, step in events:
        position = argmax[step].numpy()
        recorded = position >= 0  # layers without attention rows record -1: never a hit
        hits += recorded & in_needle[position] & (prompt[position] == generated_ids[token.index])
    return hits / len(events)


def retrieval_value_authors(
    prompt_argmax: dict[int, torch.Tensor],
    argmax: torch.Tensor,
    prompt_ids: Sequence[int],
    generated_ids: Sequence[int],
    answer_ids: Sequence[int],
) -> np.ndarray:
    """The released rule: every position (prompt or output) holding an answer token id is an event, read
    at its own row; a head hits when its argmax over the prompt holds the same token id. ``prompt_argmax``
    maps prompt positions to their (layers, heads) argmax; ``argmax`` is the recorder's per-step output."""
    answer_set = set(answer_ids)
    prompt = np.asarray(prompt_ids)
    rows: list[tuple[int, np.ndarray]] = [(prompt_ids[p], a.numpy()) for p, a in sorted(prompt_argmax.items())]
    for index, token in enumerate(generated_ids):
        if token in answer_set and index + 1 < argmax.shape[0]:
            rows.append((token, argmax[index + 1].numpy()))
    if not rows:
        return np.zeros(argmax.shape[1:], dtype=np.float64)
    hits = sum(((position >= 0) & (prompt[position] == token)).astype(np.float64) for token, position in rows)
    return hits / len(rows)
