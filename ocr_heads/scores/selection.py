"""Which heads count (step3), and which heads an experiment masks: one home for head lists.

Head extraction (step3): which heads count as OCR / retrieval heads.

Two rules, both parameterised by ``min_score`` and ``min_frequency`` (0.1 each):

- ``documented`` (default, the paper's text): mean >= min_score and the fraction of NON-zero events
  >= min_frequency.
- ``authors`` (their released step3 code, reproduced exactly): mean >= min_score and the fraction of ZERO
  events > min_frequency (strictly). This drops the strongest, always-on heads (e.g. the Qwen2-VL-2B text
  heads that score 0.995 by attending to the token itself): 40 heads instead of the documented rule's 58 on
  their Qwen2-VL-2B text file.

Rankings are by mean score, highest first; ties keep layer-major order (what a stable sort of the authors'
insertion-ordered dict gives).

Sample aggregation (``aggregate``, step3 ``--aggregate``): what a head's *score* is, for any score file. ``mean``
(default, the paper's): the mean of its event values. ``frequency``: the share of its events whose value exceeds
``event_threshold`` (default 0, i.e. the activation frequency; a mass score's events are rarely exactly 0, so
give it a threshold such as 0.1). The rules gate and rank on that score exactly as on the mean; the frequency
gate (``min_frequency``) stays the non-zero (or, for ``authors``, zero) fraction.

Head lists and head sets (exp_masking, exp_sink, the demo): :func:`load_head_ranking` reads any head or
score file into names, best first; :func:`choose_heads` picks a head set (top-k, k random, k random
outside the list) from it.
"""

from __future__ import annotations

import logging
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ocr_heads.core.heads import all_heads, parse_head
from ocr_heads.core.io import read_json
from ocr_heads.core.kinds import SampleAggregation
from ocr_heads.scores.files import ScoreFile, mean_of, nonzero_fraction, share_above

logger = logging.getLogger(__name__)

RULES = ("documented", "authors")
# How an experiment's head set is chosen (each experiment's edits name one; ocr_heads/experiments/).
SELECTIONS = ("none", "top", "random", "random_disjoint")
DEFAULT_MIN_SCORE = 0.1
DEFAULT_MIN_FREQUENCY = 0.1
AGGREGATES = tuple(SampleAggregation)  # how event values become a head's score: mean, frequency
DEFAULT_EVENT_THRESHOLD = 0.0  # frequency: the share of events whose value exceeds this


def aggregate_events(values: list[float], aggregate: str = SampleAggregation.MEAN,
                     event_threshold: float = DEFAULT_EVENT_THRESHOLD) -> float:
    """A head's score from its event values: their mean, or the share of them above ``event_threshold``."""
    if aggregate == SampleAggregation.MEAN:
        return mean_of(values)
    if aggregate == SampleAggregation.FREQUENCY:
        return share_above(values, event_threshold)
    raise ValueError(f"unknown aggregate {aggregate!r}; choose one of {', '.join(AGGREGATES)}")


@dataclass(frozen=True)
class SelectedHead:
    head: str
    score: float
    frequency: float


def _zero_count_as_authors(values: list[float]) -> int:
    # Their code counts zeros on torch.tensor(values), i.e. in float32: values that underflow to 0 in float32
    # count as zeros too. Irrelevant for real scores in [0, 1], but it keeps "exactly" exact.
    return int(np.count_nonzero(np.asarray(values, dtype=np.float32) == 0)) if values else 0


def passes(
    values: list[float],
    rule: str = "documented",
    min_score: float = DEFAULT_MIN_SCORE,
    min_frequency: float = DEFAULT_MIN_FREQUENCY,
    aggregate: str = SampleAggregation.MEAN,
    event_threshold: float = DEFAULT_EVENT_THRESHOLD,
) -> bool:
    """Whether one head's event list is selected under ``rule`` (its score: see :func:`aggregate_events`)."""
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose one of {', '.join(RULES)}")
    if not values:
        return False
    score = aggregate_events(values, aggregate, event_threshold)
    if rule == "authors":
        return _zero_count_as_authors(values) > min_frequency * len(values) and score >= min_score
    return nonzero_fraction(values) >= min_frequency and score >= min_score


def select_heads(
    scores: ScoreFile,
    rule: str = "documented",
    min_score: float = DEFAULT_MIN_SCORE,
    min_frequency: float = DEFAULT_MIN_FREQUENCY,
    aggregate: str = SampleAggregation.MEAN,
    event_threshold: float = DEFAULT_EVENT_THRESHOLD,
) -> list[SelectedHead]:
    """Selected heads ranked by score (the mean by default, see :func:`aggregate_events`; highest first, ties in
    layer-major order)."""
    def score_of(head: str, values: list[float]) -> float:
        # The mean as the score file computed it (bit-identical to its _mean file).
        return scores.means[head] if aggregate == SampleAggregation.MEAN else share_above(values, event_threshold)

    chosen = [
        SelectedHead(head, score_of(head, values), nonzero_fraction(values))
        for head, values in scores.per_head.items()
        if passes(values, rule, min_score, min_frequency, aggregate, event_threshold)
    ]
    return sorted(chosen, key=lambda selected: -selected.score)  # sorted() is stable: ties stay layer-major


def gated_scores(
    scores: ScoreFile, rule: str = "documented", min_frequency: float = DEFAULT_MIN_FREQUENCY,
    aggregate: str = SampleAggregation.MEAN, event_threshold: float = DEFAULT_EVENT_THRESHOLD,
) -> dict[str, float]:
    """Every head's score (the mean by default), set to 0 where the frequency test of ``rule`` fails (no score
    threshold).

    This is the dict the authors rank for their top-k masking and sink heads.
    """
    def score_of(head: str, values: list[float]) -> float:
        return scores.means[head] if aggregate == SampleAggregation.MEAN else share_above(values, event_threshold)

    return {
        head: score_of(head, values) if passes(values, rule, -np.inf, min_frequency, aggregate, event_threshold)
        else 0.0
        for head, values in scores.per_head.items()
    }


def top_k_heads(
    scores: ScoreFile, k: int, rule: str = "documented", min_frequency: float = DEFAULT_MIN_FREQUENCY,
    aggregate: str = SampleAggregation.MEAN, event_threshold: float = DEFAULT_EVENT_THRESHOLD,
) -> list[str]:
    """The k best heads by gated score, ties in layer-major order (as the authors' stable sort gives)."""
    gated = gated_scores(scores, rule, min_frequency, aggregate, event_threshold)
    return [head for head, _ in sorted(gated.items(), key=lambda item: -item[1])[:k]]


def selection_record(
    scores: ScoreFile, selected: list[SelectedHead], rule: str, min_score: float, min_frequency: float,
    aggregate: str = SampleAggregation.MEAN, event_threshold: float = DEFAULT_EVENT_THRESHOLD,
) -> dict[str, Any]:
    """The JSON written by step3: the ranked heads plus what produced them (the aggregation only when it is not
    the mean, so head lists ranked by the mean keep the layout they always had)."""
    by_frequency = {"aggregate": str(aggregate), "event_threshold": event_threshold}
    return {
        "heads": [asdict(head) for head in selected],
        "rule": rule,
        **(by_frequency if aggregate != SampleAggregation.MEAN else {}),
        "min_score": min_score,
        "min_frequency": min_frequency,
        "source": str(scores.path) if scores.path else None,
        "kind": scores.kind,
        "model": scores.model,
        "num_layers": scores.num_layers,
        "num_heads": scores.num_heads,
        "num_selected": len(selected),
    }


# ---------------------------------------------------------------- head lists and head sets (experiments)


def _rank_by_value(values: dict[str, float]) -> list[str]:
    # Stable sort on layer-major order: ties keep the authors' order (lower layer, lower head first).
    names = sorted(values, key=parse_head)
    return sorted(names, key=lambda name: values[name], reverse=True)


def load_head_ranking(path: str | Path) -> list[str]:
    """Head names, best first, from any head or score file the project knows:

    - step3 output ``{"heads": [{"head": "l26_h9", "score": .52, ...}, ...]}`` (ranked by score);
    - a plain JSON list of names (the authors' step3 output; taken in file order, which for their
      files is layer-major, not by score);
    - a raw score file ``{"l0_h0": [values...]}`` (ranked by the plain mean) or a mean file
      ``{"l0_h0": 0.12}`` (ranked by value).
    """
    data = read_json(path)
    plain_list = isinstance(data, list)
    if isinstance(data, dict) and "heads" in data:
        data = data["heads"]
    if isinstance(data, list):
        if all(isinstance(item, str) for item in data):
            if plain_list:
                logger.warning("%s is a plain head list: top-k takes it in file order, not by score", path)
            names = list(data)
        elif all(isinstance(item, dict) and "head" in item for item in data):
            scored = {item["head"]: float(item.get("score", 0.0)) for item in data}
            names = sorted(scored, key=lambda name: scored[name], reverse=True)  # stable: file order on ties
        else:
            raise ValueError(f"{path}: expected head names or {{'head', 'score'}} records")
    elif isinstance(data, dict) and data:
        means = {}
        for name, value in data.items():
            if isinstance(value, list):
                means[name] = sum(value) / len(value) if value else 0.0
            elif isinstance(value, (int, float)):
                means[name] = float(value)
            else:
                raise ValueError(f"{path}: head {name!r} has neither a score list nor a number")
        names = _rank_by_value(means)
    else:
        raise ValueError(f"{path}: not a head list or score file")
    for name in names:
        parse_head(name)
    return names


def needs_ranking(selection: str) -> bool:
    """Whether the selection draws from the head list (its top k, or random heads outside it)."""
    return selection in ("top", "random_disjoint")


def choose_heads(head_set: str, k: int, ranking: list[str], num_layers: int, num_heads: int, seed: int,
                 layers: list[int] | None = None) -> list[str]:
    """The heads of one head set (random draws only from ``layers``, default all: a hybrid model's
    linear-attention layers have no heads to mask).

    ``top``: the first k of ``ranking``. ``random``: k of all heads, seeded. ``random_disjoint``: k of
    the heads not in ``ranking`` (the whole list, not only its top k, as the paper's control),
    sampled from a sorted pool so the draw is the same on every machine.
    """
    if head_set == "none":
        return []
    if k < 1:
        raise ValueError(f"--num_of_masking_head must be >= 1, got {k}")
    if head_set == "top":
        if not ranking:
            raise ValueError("the head list is empty: nothing to select")
        if len(ranking) < k:
            logger.warning("the head list has only %d heads; using all of them instead of %d", len(ranking), k)
        return ranking[:k]
    pool = all_heads(num_layers, num_heads)
    if layers is not None:
        pool = [name for name in pool if parse_head(name)[0] in layers]
    if head_set == "random_disjoint":
        excluded = set(ranking)
        pool = sorted((name for name in pool if name not in excluded), key=parse_head)
    elif head_set != "random":
        raise ValueError(f"unknown head selection {head_set!r} (known: {', '.join(SELECTIONS)})")
    if len(pool) < k:
        raise ValueError(f"cannot draw {k} {head_set} heads from a pool of {len(pool)}")
    return random.Random(seed).sample(pool, k)
