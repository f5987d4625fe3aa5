"""How an example is asked: ``direct`` (the task's own answer-format line) or ``cot`` (think step by step, then a
final ``Answer:`` line), and how the answer is read back out of a chain-of-thought output.

The paper validates its heads "by applying Chain-of-Thought (CoT)", but neither its code nor a readable text
gives the CoT prompt, so ``cot`` is a reconstruction: every output made with it carries :data:`RECONSTRUCTED`.
Torch-free: the experiments' parser prints the template from here.

The answer extractor's rule (:func:`extract_answer`), in order:

1. ``marker``: the text after the LAST "Answer:" or "answer is" (case-insensitive; markdown bold/italics around
   or inside the marker are ignored), up to the end of that line (the rest of the line when the answer is on it,
   else the next non-empty line);
2. ``last_line``: no marker: the last non-empty line of the output;
3. ``empty``: the output is empty.

The extracted text is then stripped of markdown emphasis (``**``, ``__``, backticks), surrounding quotes and one
trailing period, so "**Answer:** 48213." gives "48213". The rule used is kept per row (``answer_rule``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ocr_heads.tasks.base import Example

DIRECT = "direct"
COT = "cot"
PROMPTS = (DIRECT, COT)
RECONSTRUCTED = "protocol reconstructed; the paper's CoT setup is not public"

# The one CoT template: it replaces the task's answer-format line (a "reply with the answer only" line would
# contradict the reasoning); the question and the pages/context stay as the task builds them.
COT_INSTRUCTION = (
    "Think step by step: first find where the answer is shown, then reason briefly. "
    'Finish with a last line of the form "Answer: <answer>", the answer alone, a word or short phrase.'
)
ANSWER_MARKER = "Answer:"
# Default decoding length per prompt: a chain needs room before its marker (recorded in each run's config).
DEFAULT_MAX_NEW_TOKENS = {DIRECT: 32, COT: 256}
# Below this many new tokens a chain of thought rarely reaches its "Answer:" line: warned, and the fallback rule
# (last non-empty line) decides; each row records the rule that was used.
MIN_COT_TOKENS = 64

# "Answer:" / "answer is", with markdown emphasis allowed around and inside ("**Answer:**", "*answer is*").
_MARKER = re.compile(r"[*_]*\b(?:final\s+)?answer[*_]*\s*(?::|\bis\b)[*_]*:?", re.IGNORECASE)
_EMPHASIS = re.compile(r"(\*\*|__|`|\*|_)(.+?)\1")


@dataclass(frozen=True)
class Extraction:
    """The answer read out of a generated text, and which rule found it (``marker``, ``last_line``, ``empty``)."""

    answer: str
    rule: str


def with_prompt(example: Example, prompt: str) -> Example:
    """``example`` asked the ``prompt`` way: ``direct`` returns it unchanged; ``cot`` swaps its answer-format
    line for :data:`COT_INSTRUCTION`."""
    if prompt == DIRECT:
        return example
    if prompt != COT:
        raise ValueError(f"unknown prompt {prompt!r}; choose one of {', '.join(PROMPTS)}")
    return Example(id=example.id, question=example.question, golds=example.golds, pages=example.pages,
                   context=example.context, instruction=COT_INSTRUCTION, meta=example.meta)


def _clean(text: str) -> str:
    text = _EMPHASIS.sub(r"\2", text.strip())
    text = text.strip().strip("*_`").strip().removesuffix(".").rstrip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text[:-1].rstrip() if text.endswith(".") else text


def extract_answer(output: str) -> Extraction:
    """The final answer of a (chain-of-thought) output, by the rule in the module docstring."""
    matches = list(_MARKER.finditer(output))
    if matches:
        lines = [line for line in output[matches[-1].end():].splitlines() if line.strip()]
        if lines:
            return Extraction(_clean(lines[0]), "marker")
        output = output[:matches[-1].start()]  # cut off right after its marker: the marker line is no answer
    lines = [line for line in output.splitlines() if line.strip()]
    if not lines:
        return Extraction("", "empty")
    return Extraction(_clean(lines[-1]), "last_line")
