"""The head-score registry: every module of :mod:`ocr_heads.scores.registered` that defines ``SCORE`` (a
:class:`~ocr_heads.scores.base.HeadScore`) is a score, found by name.

    ocr       (tag fg, image)  the paper's OCR score: decode-time argmax on the answer's tiles
    retrieval (tag te, text)   Wu et al.'s retrieval score: decode-time copy from the needle
    prefill   (tag prefill, image)  post-image prompt rows' attention mass on the answer's tiles

Adding a score is one new module in ``registered/`` (plus its test); step2, step3, the score files and the
report look it up by name or tag. See docs/extending.md.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from ocr_heads.scores.base import HeadScore, Observed, Recording, SampleValues, Settings

__all__ = ["HeadScore", "Observed", "Recording", "SampleValues", "Settings", "all_scores", "by_tag",
           "default_score", "get_score", "listing"]

DEFAULT = {"image": "ocr", "text": "retrieval"}  # the score each step2 script runs without --score


@cache
def all_scores() -> dict[str, HeadScore]:
    """Name -> score, for every module of this package that defines ``SCORE`` (sorted by name)."""
    found: dict[str, HeadScore] = {}
    package = f"{__name__}.registered"
    for info in sorted(pkgutil.iter_modules(importlib.import_module(package).__path__), key=lambda m: m.name):
        score = getattr(importlib.import_module(f"{package}.{info.name}"), "SCORE", None)
        if score is None:
            continue
        for other in found.values():
            if other.name == score.name or {other.tag, *other.other_tags} & {score.tag, *score.other_tags}:
                raise RuntimeError(f"scores {other.name} and {score.name} share a name or file tag")
        found[score.name] = score
    return dict(sorted(found.items()))


def listing() -> str:
    """One line per registered score: name, tag, modality, summary."""
    return "\n".join(f"{s.name:<10} tag {s.tag:<8} {s.modality:<6} {s.summary}" for s in all_scores().values())


def get_score(name: str) -> HeadScore:
    """The score registered as ``name``; ValueError listing the registered ones otherwise."""
    scores = all_scores()
    if name not in scores:
        raise ValueError(f"unknown score {name!r}; registered scores:\n{listing()}")
    return scores[name]


def by_tag(tag: str) -> HeadScore | None:
    """The score whose files carry ``tag`` (``fg``, ``cg``, ``te``, ...), or None."""
    for score in all_scores().values():
        if tag == score.tag or tag in score.other_tags:
            return score
    return None


def default_score(modality: str) -> HeadScore:
    return get_score(DEFAULT[modality])
