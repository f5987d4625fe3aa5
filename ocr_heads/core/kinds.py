"""The words every stage shares for what a score reads and which attention row is an event (design §1).

``Modality``: the form of a sample a head score reads (page images, or the context as plain text).
``Alignment``: which attention row is an answer token's event: ``produce`` (the row that produced the token,
the default) or ``authors`` (the released code's rule: the row of the token itself, with the released
tile test and recall; :mod:`ocr_heads.scores.rules`). Head *selection* has rules of its own, also named
``authors`` (:data:`ocr_heads.scores.selection.RULES`): that word is not an Alignment.

Both are ``str`` enums: a member equals its value (``Modality.IMAGE == "image"``), formats as it and
``json.dumps`` writes it, so files, messages and code that still compares plain strings are unchanged.
"""

from __future__ import annotations

from enum import Enum


class _Word(str, Enum):
    """A str enum that reads as its plain value everywhere: ``str``, f-strings, ``json.dumps`` and also ``repr``, so
    messages built with ``!r`` (argparse's choices, settings differences) stay what they were with plain strings.
    (``enum.StrEnum`` needs Python 3.11; the project supports 3.10.)"""

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return repr(self.value)


class Modality(_Word):
    IMAGE = "image"  # page images (OCR heads)
    TEXT = "text"  # the context as plain text, no image (retrieval heads)


class Alignment(_Word):
    PRODUCE = "produce"  # the row that produced the token (query p-1): the default
    AUTHORS = "authors"  # the released code's row (query p) and its tile test, occurrences and recall


# The axes of the head-score design space (docs/protocol.md, "The head-score design space"): every registered
# score declares where it sits on the first three (:class:`ocr_heads.scores.base.DesignPoint`); the fourth is
# chosen when heads are ranked (step3 --aggregate), so it applies to any score.
class QueryRows(_Word):
    """Which attention rows a score reads."""

    PRODUCING = "producing"  # the row that produced each answer token (prompt's last row, then decode rows)
    FIRST_ANSWER = "first_answer"  # only the row that produced the first answer token
    QUESTION = "question"  # the question's tokens, at prefill
    POST_IMAGE = "post_image"  # every prompt row after the last image token (the producing row excluded), at prefill


class KeyAggregation(_Word):
    """How a row's attention over the keys becomes a number for the target."""

    ARGMAX = "argmax"  # 1 when the row's largest weight lies on the target, else 0
    MASS = "mass"  # the row's probability summed over the target


class Target(_Word):
    """Which keys count as what the head should look at."""

    EVIDENCE = "evidence"  # the image tiles showing the answer's characters
    IMAGE = "image"  # every image token
    NEEDLE = "needle"  # the needle in the text context


class SampleAggregation(_Word):
    """How a head's event values become its score when heads are ranked."""

    MEAN = "mean"  # the mean of its event values (the paper's)
    FREQUENCY = "frequency"  # the share of its events whose value exceeds a threshold
