"""Haystack text and needles: an embedded offline source and the paper's Hugging Face sources.

The embedded source is the help text that ships with CPython (``pydoc_data.topics``), so it needs no
network and is the same on every machine with the same Python minor version. The hub sources
(``nanotron/simple_needle_in_a_hay_stack``, ``opencompass/NeedleBench``) are used on a connected
machine with ``--source hf``.
"""

from __future__ import annotations

import random
import re
import string
from dataclasses import dataclass
from functools import lru_cache

# Target lengths are in tokens; step1 has no tokenizer, so it budgets ~4 characters per token
# (the usual English rate of BPE tokenizers such as Qwen2's).
CHARS_PER_TOKEN = 4
_PRINTABLE = set(string.printable) - set("\t\r\x0b\x0c")


def normalise_whitespace(text: str) -> str:
    """One space between words, printable ASCII only: what the page renderer draws."""
    text = "".join(c if c in _PRINTABLE else " " for c in text)
    return re.sub(r"\s+", " ", text).strip()


@lru_cache(maxsize=1)
def embedded_corpus() -> str:
    from pydoc_data import topics

    return normalise_whitespace(" ".join(topics.topics[key] for key in sorted(topics.topics)))


def haystack_slice(corpus: str, num_chars: int, rng: random.Random) -> str:
    """A random window of about ``num_chars`` characters, starting and ending on word boundaries."""
    if not corpus.strip():
        raise ValueError("empty haystack: the haystack source has no text")
    if num_chars >= len(corpus):
        return corpus
    start = rng.randrange(0, len(corpus) - num_chars)
    start = corpus.find(" ", start) + 1
    end = corpus.rfind(" ", start, start + num_chars)
    if end <= start:
        end = start + num_chars
    return corpus[start:end].strip()


@dataclass(frozen=True)
class Needle:
    text: str  # the sentence inserted into the haystack
    question: str
    answer: str  # must occur verbatim in ``text``
    # Where the builder put the answer in ``text``: [start, end) offsets. Empty for needles that come
    # ready-made (hub rows), whose slots are then found by whole-token search (see ``answer_slots``).
    slots: tuple[tuple[int, int], ...] = ()

    def answer_slots(self) -> list[tuple[int, int]]:
        """The answer's slots in ``text``: the builder's, else every whole-token occurrence.

        A whole-token occurrence is not glued to a letter or digit on either side, so a passkey "e" is
        found in "is e." but not in "The" or "key"; an answer that only ever occurs glued to other
        characters falls back to every substring occurrence.
        """
        if self.slots:
            for start, end in self.slots:
                if self.text[start:end] != self.answer:
                    raise ValueError(f"needle slot {start}:{end} of {self.text!r} is not the answer {self.answer!r}")
            return list(self.slots)
        if not self.answer:
            return []
        pattern = re.escape(self.answer)
        whole = [m.span() for m in re.finditer(rf"(?<![^\W_]){pattern}(?![^\W_])", self.text)]
        if whole:
            return whole
        return [(m.start(), m.start() + len(self.answer)) for m in re.finditer(f"(?={pattern})", self.text)]


def templated_needle(template: str, answer: str, question: str) -> Needle:
    """Fill every ``{answer}`` of ``template`` and keep the offsets where the answer went."""
    pieces = template.split("{answer}")
    text, slots = pieces[0], []
    for piece in pieces[1:]:
        slots.append((len(text), len(text) + len(answer)))
        text += answer + piece
    return Needle(text=text, question=question, answer=answer, slots=tuple(slots))


PASSKEY_TEMPLATE = "The pass key is {answer}. Remember it. {answer} is the pass key."
PASSKEY_QUESTION = "What is the pass key?"


def passkey_needle(rng: random.Random, digits: int = 5) -> Needle:
    key = "".join(rng.choice("0123456789") for _ in range(digits))
    key = str(rng.randint(1, 9)) + key[1:]  # no leading zero: it reads like a number
    return templated_needle(PASSKEY_TEMPLATE, key, PASSKEY_QUESTION)


def single_char_needle(char: str) -> Needle:
    """Case-study needle whose answer is one character of 0-9a-z."""
    if len(char) != 1 or char not in string.digits + string.ascii_lowercase:
        raise ValueError(f"single-character passkeys are 0-9a-z, got {char!r}")
    return templated_needle(PASSKEY_TEMPLATE, char, PASSKEY_QUESTION)


_PEOPLE = ["Mara", "Ilya", "Tomas", "Keiko", "Amara", "Lionel", "Priya", "Soren", "Beatrix", "Ode"]
_THINGS = ["garden", "lighthouse", "violin", "bakery", "observatory", "sailboat", "library", "orchard"]
_ANSWERS = [
    "blue saffron", "a copper key", "silver thread", "smoked paprika", "wild honey",
    "a green lantern", "forty lemons", "a brass compass", "cold jasmine tea", "amber glass",
]


def niah_needle(rng: random.Random) -> Needle:
    """A seeded fact with a question whose answer is a short phrase (can wrap across lines)."""
    person, thing, answer = rng.choice(_PEOPLE), rng.choice(_THINGS), rng.choice(_ANSWERS)
    return templated_needle(f"The secret hidden in {person}'s {thing} is {{answer}}.", answer,
                            f"What is the secret hidden in {person}'s {thing}?")


def insert_needle(haystack: str, needle: str, depth: float) -> tuple[str, int]:
    """Insert ``needle`` at a sentence boundary near ``depth`` (0..1); returns (context, needle offset)."""
    target = int(len(haystack) * depth)
    boundary = haystack.rfind(". ", 0, target)
    cut = 0 if boundary < 0 else boundary + 2
    before, after = haystack[:cut], haystack[cut:]
    context = (before + needle + " " + after).strip() if before else (needle + " " + after).strip()
    return context, context.index(needle)


def hf_passkey_contexts(length_tokens: int, n: int, seed: int) -> list[tuple[str, Needle]]:
    """Contexts of ``nanotron/simple_needle_in_a_hay_stack`` at one context length (connected machine).

    Each row's prompt already holds its pass-key needle; as the paper does, the trailing
    "{answer} is the pass key." is removed so the key is stated once. The needle is the sentence
    that states the key.
    """
    from datasets import load_dataset

    rows = load_dataset("nanotron/simple_needle_in_a_hay_stack", split="train")
    missing = {"prompt", "answer", "context_length"} - set(rows.column_names)
    if missing:
        raise ValueError(f"nanotron/simple_needle_in_a_hay_stack lacks columns {sorted(missing)}: "
                         f"has {rows.column_names}")
    rows = rows.filter(lambda r: int(r["context_length"]) == length_tokens).shuffle(seed=seed)
    contexts = []
    for row in rows.select(range(min(n, len(rows)))):
        answer = str(row["answer"])
        context = normalise_whitespace(row["prompt"].replace(f"{answer} is the pass key.", ""))
        match = re.search(r"[^.]*\b" + re.escape(answer) + r"\b[^.]*\.", context)
        if match is None:
            raise ValueError(f"a nanotron row's prompt does not state its answer {answer!r}")
        sentence = match.group(0).strip()
        contexts.append((context, Needle(sentence, "What is the pass key?", answer)))
    return contexts


def hf_niah_source(seed: int) -> tuple[str, list[Needle]]:  # pragma: no cover - network
    """Haystack text and needles of ``opencompass/NeedleBench`` (English)."""
    from datasets import load_dataset

    haystack_rows = load_dataset("opencompass/NeedleBench", "en_haystack_texts", split="test")
    needle_rows = load_dataset("opencompass/NeedleBench", "retrieval_needles", split="test")
    corpus = normalise_whitespace(" ".join(r["text"] for r in haystack_rows))
    needles = [
        Needle(normalise_whitespace(r["needle"]), r["retrieval_question"], r["gold_standard_answer"])
        for r in needle_rows
        if r.get("language", "English") == "English"
    ]
    random.Random(seed).shuffle(needles)
    return corpus, needles
