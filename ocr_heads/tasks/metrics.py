"""Answer metrics: ANLS (DocVQA), EM and F1 (SQuAD), passkey accuracy, and their mean over samples.

Every metric takes one prediction and the list of gold answers, returns a float in [0, 1], and
takes the best gold (max over golds). Tasks name their metrics by the keys of ``METRICS``.
"""

from __future__ import annotations

import math
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence

__all__ = [
    "METRICS",
    "aggregate",
    "anls",
    "exact_match",
    "f1",
    "levenshtein",
    "mean",
    "normalize_answer",
    "passkey_accuracy",
    "score_all",
]

_ARTICLES_RE = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_ASCII_PUNCTUATION = frozenset(string.punctuation)


def _check_golds(golds: Sequence[str]) -> None:
    # A bare string would be iterated character by character and silently give a wrong score.
    if isinstance(golds, str):
        raise TypeError(f"golds must be a list of strings, not the string {golds!r}")
    if len(golds) == 0:
        raise ValueError("golds is empty: a sample needs at least one gold answer to be scored")


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions, each cost 1) over Unicode code points."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def _anls_normalize(text: str) -> str:
    # NFC first so that a precomposed "é" and "e" + combining accent compare equal.
    return unicodedata.normalize("NFC", text).lower().strip()


def anls(prediction: str, golds: Sequence[str], threshold: float = 0.5) -> float:
    """Average Normalized Levenshtein Similarity of one answer (Biten et al. 2019, the DocVQA metric).

    NL = levenshtein(gold, pred) / max(len(gold), len(pred)) on lower-cased, stripped strings;
    the score is 1 - NL when NL < threshold and 0 otherwise (so NL exactly at the threshold scores 0,
    as in the official definition; lmms-eval keeps it at 0.5). Two empty strings are identical (1.0).
    """
    _check_golds(golds)
    pred = _anls_normalize(prediction)
    best = 0.0
    for gold in golds:
        target = _anls_normalize(gold)
        longest = max(len(target), len(pred))
        distance = levenshtein(target, pred) / longest if longest else 0.0
        best = max(best, 1.0 - distance if distance < threshold else 0.0)
    return best


def _is_punctuation(char: str) -> bool:
    # SQuAD removes string.punctuation; we also drop Unicode punctuation (curly quotes, dashes, "。"),
    # which the authors' pipeline removed too by running ftfy.fix_text before normalising.
    return char in _ASCII_PUNCTUATION or unicodedata.category(char).startswith("P")


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, drop punctuation, drop articles a/an/the, collapse whitespace."""
    text = unicodedata.normalize("NFC", text).lower()
    text = "".join(char for char in text if not _is_punctuation(char))
    text = _ARTICLES_RE.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 if the normalised prediction equals a normalised gold, else 0.0."""
    _check_golds(golds)
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(gold) for gold in golds))


def _token_f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    if not pred_tokens or not gold_tokens:
        # SQuAD convention: an empty answer is right only against an empty gold.
        return float(pred_tokens == gold_tokens)
    common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    precision = common / len(pred_tokens)
    recall = common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def f1(prediction: str, golds: Sequence[str]) -> float:
    """Bag-of-tokens F1 between normalised prediction and gold (whitespace tokens), max over golds."""
    _check_golds(golds)
    pred_tokens = normalize_answer(prediction).split()
    return max(_token_f1(pred_tokens, normalize_answer(gold).split()) for gold in golds)


def passkey_accuracy(prediction: str, golds: Sequence[str]) -> float:
    """1.0 if some gold occurs in the prediction (case-insensitive, after stripping the gold).

    An empty gold never matches: it is a substring of everything and would make every answer right.
    """
    _check_golds(golds)
    pred = unicodedata.normalize("NFC", prediction).casefold()
    for gold in golds:
        target = unicodedata.normalize("NFC", gold).casefold().strip()
        if target and target in pred:
            return 1.0
    return 0.0


METRICS: dict[str, Callable[[str, Sequence[str]], float]] = {
    "anls": anls,
    "em": exact_match,
    "f1": f1,
    "accuracy": passkey_accuracy,
}


def score_all(prediction: str, golds: Sequence[str], names: Iterable[str]) -> dict[str, float]:
    """Score one prediction with several metrics by name: ``{"em": 1.0, "f1": 1.0}``."""
    scores = {}
    for name in names:
        if name not in METRICS:
            raise KeyError(f"unknown metric {name!r}; known: {', '.join(sorted(METRICS))}")
        scores[name] = METRICS[name](prediction, golds)
    return scores


def mean(values: Iterable[float]) -> float:
    """Mean of per-sample scores; NaN values are an error, not silently dropped."""
    values = list(values)
    if not values:
        raise ValueError("no scores to average")
    if any(math.isnan(value) for value in values):
        raise ValueError("a per-sample score is NaN")
    return sum(values) / len(values)


def aggregate(records: Iterable[Mapping[str, float]], names: Iterable[str] | None = None) -> dict[str, float]:
    """Mean of each metric over per-sample score dicts, plus ``n`` (the number of samples).

    ``names`` picks the metrics (default: every key of the first record). Every record must hold
    every picked metric, so a sample that failed to score cannot silently shrink the denominator.
    """
    records = list(records)
    if not records:
        return {"n": 0}
    names = list(names) if names is not None else list(records[0])
    result: dict[str, float] = {}
    for name in names:
        missing = [i for i, record in enumerate(records) if name not in record]
        if missing:
            raise KeyError(f"metric {name!r} missing from {len(missing)} records (first: index {missing[0]})")
        result[name] = mean(float(record[name]) for record in records)
    result["n"] = len(records)
    return result
