"""The CoT prompt and its answer extractor (ocr_heads/tasks/prompting.py), on outputs written the way the
families' chat models answer (their end-of-turn tokens are removed by decode before extraction)."""

import pytest

from ocr_heads.tasks import Example
from ocr_heads.tasks.metrics import exact_match
from ocr_heads.tasks.prompting import COT_INSTRUCTION, extract_answer, with_prompt

# (family whose style the output imitates, raw output, extracted answer, rule)
OUTPUTS = [
    ("qwen2-vl", "The page shows the sentence \"The pass key is 48213.\" on line 4.\nAnswer: 48213", "48213",
     "marker"),
    ("qwen2-vl", "Let me look at the table. The total row reads $1,250.\n\nAnswer: $1,250.", "$1,250", "marker"),
    ("internvl2", "首先, I locate the heading. It says ITC Limited.\nThe answer is ITC Limited.", "ITC Limited",
     "marker"),
    ("gemma3", "Okay, let's break this down.\n\n1. The invoice date is in the top right.\n2. It reads "
     "12/03/1998.\n\n**Answer:** 12/03/1998", "12/03/1998", "marker"),
    ("gemma3", "**Step 1:** find the name.\n**Step 2:** the signature says John Smith.\n\n**Final Answer: John "
     "Smith**", "John Smith", "marker"),
    ("smolvlm", " The document is a letter. The sender is R. J. Reynolds", "The document is a letter. The sender "
     "is R. J. Reynolds", "last_line"),
    ("smolvlm", "Assistant: The year printed at the bottom is 1967.\nAnswer:\n1967", "1967", "marker"),
    ("llava-onevision", "The chart's title is at the top. The answer is \"Net Sales\".", "Net Sales", "marker"),
    ("llava-onevision", "Step 1: The question asks for the page number.\nStep 2: It is printed at the bottom.\n"
     "14", "14", "last_line"),
    ("qwen2-vl", "I first thought the answer is 7, but reading again, line 3 says 9.\nAnswer: 9", "9", "marker"),
    ("internvl2", "The key appears twice on page 2.\nANSWER: 20417.", "20417", "marker"),
    ("qwen2-vl", "Looking at the page, the amount is 300 dollars.\nAnswer:", "Looking at the page, the amount is "
     "300 dollars", "last_line"),  # cut off right after the marker: the line before it
    ("gemma3", "", "", "empty"),
    ("llava-onevision", "To answer this, I read the header.\nIt says *Annual Report 2004*",
     "It says Annual Report 2004", "last_line"),
]


@pytest.mark.parametrize(("family", "output", "answer", "rule"), OUTPUTS, ids=[f"{o[0]}-{i}" for i, o in
                                                                                  enumerate(OUTPUTS)])
def test_extract_answer(family, output, answer, rule):
    extraction = extract_answer(output)
    assert (extraction.answer, extraction.rule) == (answer, rule)


def test_extracted_answer_scores_exact_match():
    # The raw chain would score 0 against the gold; the extracted answer scores 1.
    output = "The key is printed in the middle of page 1.\n**Answer:** 48213."
    assert exact_match(output, ["48213"]) == 0.0
    assert exact_match(extract_answer(output).answer, ["48213"]) == 1.0


def test_with_prompt_swaps_only_the_instruction():
    example = Example(id="1", question="What is the pass key?", golds=["1"], context="text",
                      instruction="Reply with the answer only.")
    assert with_prompt(example, "direct") is example
    cot = with_prompt(example, "cot")
    assert cot.prompt == f"text\n\nQuestion: What is the pass key?\n{COT_INSTRUCTION}"
    assert (cot.id, cot.golds, cot.context) == ("1", ["1"], "text")
    with pytest.raises(ValueError, match="unknown prompt"):
        with_prompt(example, "think")
