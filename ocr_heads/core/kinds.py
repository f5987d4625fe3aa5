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
