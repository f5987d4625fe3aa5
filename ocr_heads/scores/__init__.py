"""The head-score registry: every module of :mod:`ocr_heads.scores.registered` that defines ``SCORE`` (a
:class:`~ocr_heads.scores.base.HeadScore`) is a score, found by name.

    ocr               (tag fg, image)          the paper's OCR score: decode-time argmax on the answer's tiles
    retrieval         (tag te, text)           Wu et al.'s retrieval score: decode-time copy from the needle
    prefill           (tag prefill, image)     post-image prompt rows' attention mass on the answer's tiles
    ocr_mass          (tag ocrmass, image)     decode-time attention mass on the answer's tiles
    question_mass     (tag qmass, image)       the question's rows' attention mass on the answer's tiles at prefill
    first_token_mass  (tag firstmass, image)   the first answer token's row: mass on all the answer's tiles
    image_mass        (tag imagemass, image)   decode-time attention mass on the whole image

Each declares its point in the head-score design space (:class:`~ocr_heads.scores.base.DesignPoint`; the table
is in docs/protocol.md).

Adding a score is one new module in ``registered/`` (plus its test); step2, step3, the score files and the
report look it up by name or tag. See docs/extending.md.
"""

from __future__ import annotations

from ocr_heads.core.registry import DuplicateName, Registry, declared
from ocr_heads.scores.base import DesignPoint, HeadScore, Observed, Recording, SampleValues, Settings

__all__ = ["DesignPoint", "HeadScore", "Observed", "Recording", "SampleValues", "Settings", "all_scores", "by_tag",
           "default_score", "get_score", "listing", "of_modality"]

DEFAULT = {"image": "ocr", "text": "retrieval"}  # the score each step2 script runs without --score

_REGISTRY: Registry[HeadScore] = Registry("score", f"{__name__}.registered", declared("SCORE"))


def all_scores() -> dict[str, HeadScore]:
    """Name -> score, for every module of ``registered/`` that defines ``SCORE`` (sorted by name)."""
    scores = _REGISTRY.all()
    owner: dict[str, str] = {}  # file tag -> score: a tag names the score of a file, so it must be unique too
    for score in scores.values():
        for tag in (score.tag, *score.other_tags):
            if owner.setdefault(tag, score.name) != score.name:
                raise DuplicateName(f"scores {owner[tag]} and {score.name} share the file tag {tag!r}")
    return scores


def listing() -> str:
    """One line per registered score: name, tag, modality, summary."""
    scores = all_scores().values()
    width = max(len(s.name) for s in scores)
    return "\n".join(f"{s.name:<{width}} tag {s.tag:<9} {s.modality:<6} {s.summary}" for s in scores)


def of_modality(modality: str) -> list[HeadScore]:
    """The registered scores that read ``modality`` ("image" or "text"), by name (what ``--score all`` runs)."""
    return [score for score in all_scores().values() if score.modality == modality]


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
