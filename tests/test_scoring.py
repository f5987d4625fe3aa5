"""OCR and retrieval scores on hand-built cases with answers computed by hand."""

import functools

import numpy as np
import pytest
import torch

from ocr_heads.models.base import ImageTokens
from ocr_heads.scores.geometry import covering_tiles, overlap_fraction
from ocr_heads.scores.rules import (
    AnswerToken,
    align_answer_tokens,
    char_targets,
    event_rows,
    longest_common_run,
    ocr_values,
    recall,
    retrieval_value,
    retrieval_value_authors,
)


def test_longest_common_run_and_recall():
    assert longest_common_run([1, 2, 3, 4], [9, 2, 3, 8]) == (2, 1, 1)
    assert recall([4, 8, 2, 1, 3], [9, 4, 8, 2, 7, 1, 3]) == pytest.approx(3 / 5)
    assert recall([4, 8], []) == 0.0


def test_align_answer_tokens_by_decoded_text():
    # Multi-character tokens: "48" "213" spell the answer after a prefix token.
    tokens = align_answer_tokens(["Key: ", "48", "213", "."], "48213")
    assert tokens == [AnswerToken(1, (0, 2)), AnswerToken(2, (2, 5))]
    # A token straddling the answer's start maps only to the answer characters it covers.
    assert align_answer_tokens([" 4", "82"], "482") == [AnswerToken(0, (0, 1)), AnswerToken(1, (1, 3))]
    # A partial answer aligns by its longest common run.
    assert align_answer_tokens(["9", "2", "1"], "4821") == [AnswerToken(1, (2, 3)), AnswerToken(2, (3, 4))]
    assert align_answer_tokens(["x", "y"], "12") == []


def test_event_rows_produce_vs_authors():
    tokens = [AnswerToken(0, (0, 1)), AnswerToken(2, (1, 2)), AnswerToken(3, (2, 3))]
    assert event_rows(tokens, num_steps=4, alignment="produce") == [(tokens[0], 0), (tokens[1], 2), (tokens[2], 3)]
    # The authors read the row after the token: the last generated token has none.
    assert event_rows(tokens, num_steps=4, alignment="authors") == [(tokens[0], 1), (tokens[1], 3)]


def test_overlap_threshold():
    tiles = np.array([[0, 0, 10, 10], [10, 0, 20, 10]], dtype=float)
    box = [8, 0, 18, 10]  # 20% in tile 0, 80% in tile 1
    np.testing.assert_allclose(overlap_fraction(box, tiles), [0.2, 0.8])
    assert covering_tiles(box, tiles, 0.1) == [0, 1]
    assert covering_tiles(box, tiles, 0.2) == [1]  # "exceeds": 20% is not above 20%
    with pytest.raises(ValueError, match="zero-size"):
        overlap_fraction([3, 3, 3, 9], tiles)


def test_ocr_score_hand_built():
    # One page, 2x2 tiles of 10 px, image tokens at prompt positions 5..8 (row-major).
    tiles = np.array([[0, 0, 10, 10], [10, 0, 20, 10], [0, 10, 10, 20], [10, 10, 20, 20]], dtype=float)
    page = ImageTokens(page=0, start=5, tile_boxes=tiles)
    # Answer "ab": 'a' inside tile 0 (position 5), 'b' straddles tiles 1 and 3 (positions 6 and 8).
    evidence = [{0: [[1, 1, 9, 9], [11, 5, 19, 15]]}]
    targets = char_targets(evidence, [page])
    assert targets == [{5}, {6, 8}]
    # 2 steps x 1 layer x 3 heads. Step 0 produced 'a', step 1 produced 'b'.
    argmax = torch.tensor([[[5, 6, 0]], [[8, 8, 6]]])
    tokens = [AnswerToken(0, (0, 1)), AnswerToken(1, (1, 2))]
    values = ocr_values(argmax, tokens, targets, sample_recall=0.5)
    # head 0: hit, hit; head 1: miss (6 not in {5}), hit; head 2: miss, hit (6 in {6, 8}).
    np.testing.assert_allclose(values[:, 0, :], [[0.5, 0, 0], [0.5, 0.5, 0.5]])
    # Authors' alignment: token 0 is read at step 1, token 1 has no later row.
    np.testing.assert_allclose(ocr_values(argmax, tokens, targets, 1.0, "authors")[:, 0, :], [[0, 0, 0]])


def test_ocr_targets_union_over_occurrences_and_pages():
    tiles = np.array([[0, 0, 10, 10], [10, 0, 20, 10]], dtype=float)
    pages = [ImageTokens(0, 3, tiles), ImageTokens(1, 9, tiles)]
    evidence = [{0: [[1, 1, 9, 9]], 1: [[11, 1, 19, 9]]}, {1: [[1, 1, 9, 9], [11, 1, 19, 9]]}]
    assert char_targets(evidence, pages) == [{3, 9}, {10}]
    with pytest.raises(ValueError, match="page 2"):
        char_targets([{2: [[1, 1, 9, 9]]}], pages)


def test_retrieval_score_hand_built():
    # Prompt: positions 0..7, needle is positions 3..6 holding tokens 40 41 42 43.
    prompt = [1, 2, 9, 40, 41, 42, 43, 7]
    generated = [40, 41, 99]
    tokens = [AnswerToken(0, (0, 1)), AnswerToken(1, (1, 2))]  # answer = tokens 40 41
    # steps x layers(1) x heads(3)
    argmax = torch.tensor([[[3, 3, 0]], [[4, 2, 4]], [[0, 0, 0]]])
    value = retrieval_value(argmax, prompt, generated, tokens, needle_positions={3, 4, 5, 6})
    # head 0: both hit -> 1; head 1: hit then miss (pos 2 outside needle) -> 0.5; head 2: miss then hit -> 0.5
    np.testing.assert_allclose(value[0], [1.0, 0.5, 0.5])
    # Same token in the needle but the wrong one: no hit.
    wrong = torch.tensor([[[4, 4, 4]], [[3, 3, 3]], [[0, 0, 0]]])
    np.testing.assert_allclose(retrieval_value(wrong, prompt, generated, tokens, {3, 4, 5, 6})[0], [0, 0, 0])
    assert retrieval_value(argmax, prompt, generated, [], {3}).sum() == 0


def test_retrieval_authors_rule_counts_prompt_positions():
    prompt = [1, 40, 5, 40, 41]
    generated = [40, 41, 2]
    # prompt rows 1, 3 (token 40) and 4 (token 41); one layer, two heads
    prompt_argmax = {1: torch.tensor([[1, 0]]), 3: torch.tensor([[1, 2]]), 4: torch.tensor([[4, 4]])}
    argmax = torch.tensor([[[0, 0]], [[3, 0]], [[4, 1]]])  # step 1 reads token 40, step 2 reads token 41
    value = retrieval_value_authors(prompt_argmax, argmax, prompt, generated, answer_ids=[40, 41])
    # events: rows 1, 3, 4 of the prompt + generated 40 (step 1) + 41 (step 2) = 5 events
    # head 0: 40@1 yes, 40@1 yes, 41@4 yes, 40@3 yes, 41@4 yes -> 5/5; head 1: no(1), no(5), yes(41), no(1), no(40)
    np.testing.assert_allclose(value[0], [1.0, 0.2])


@functools.lru_cache(maxsize=1)
def _bpe_with_space_tokens():
    """A byte-level BPE (Qwen2-style: digits split one per token) in which " e" and "e", " blue" and
    "blue" are different tokens, as in Qwen2's vocabulary (384 vs 68, 6303 vs "blue")."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)])
    corpus = ["The pass key is e. Remember it. e is the pass key.", "blue saffron is blue saffron",
              "The secret is blue saffron.", "The pass key is 48213."] * 20
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator(corpus, trainer)
    return tokenizer


@pytest.mark.parametrize(("answer", "output", "old_recall"), [
    ("e", "The pass key is e.", 0.0),  # " e" only
    ("blue saffron", "It is blue saffron.", 0.5),  # " blue" differs, " saffron" is shared
    ("e", 'The key is "e".', 1.0),  # after a quote the bare token is used
    ("blue saffron", "blue saffron", 1.0),
])
def test_recall_counts_the_answer_in_the_tokenization_the_output_has(answer, output, old_recall):
    from ocr_heads.scores.rules import answer_id_variants, best_recall

    tokenizer = _bpe_with_space_tokens()
    encode = lambda text: tokenizer.encode(text).ids  # noqa: E731
    assert encode(" e") != encode("e") and encode(" blue") != encode("blue")
    generated = encode(output)
    # The old rule (the bare answer's ids) under-counts a correct output ...
    assert recall(encode(answer), generated) == old_recall
    # ... the answer in the tokenization the output has gets full recall.
    assert best_recall(answer_id_variants(encode, answer, output), generated) == 1.0


def test_recall_of_digits_is_unchanged():
    from ocr_heads.scores.rules import answer_id_variants, best_recall

    tokenizer = _bpe_with_space_tokens()
    encode = lambda text: tokenizer.encode(text).ids  # noqa: E731
    assert len(encode("48213")) == 5  # one token per digit, as Qwen2
    for output, expected in [("The pass key is 48213.", 1.0), ("The pass key is 4821.", 4 / 5),
                             ("The pass key is 13.", 2 / 5), ("no key", 0.0)]:
        generated = encode(output)
        assert recall(encode("48213"), generated) == pytest.approx(expected)
        assert best_recall(answer_id_variants(encode, "48213", output), generated) == pytest.approx(expected)


# ---- --alignment authors: the released step2 OCR script (baekingeol/OCR_Head), rule by rule

# A 50x50 px page whose resized image is 56x56: 2x2 tiles of 28 px, i.e. 25 px on the page.
AUTHORS_TILES = np.array([[0, 0, 25, 25], [25, 0, 50, 25], [0, 25, 25, 50], [25, 25, 50, 50]], dtype=float)


def test_authors_overlap_is_a_tenth_of_a_percent_on_truncated_resized_coordinates():
    from ocr_heads.scores.geometry import authors_covering_tiles

    # 1/11 = 9.1% of the box lies in tile 1: under the paper's 10% it is not covered.
    box = [15, 5, 26, 15]
    assert covering_tiles(box, AUTHORS_TILES, 0.1) == [0]
    # Released: x 15*1.12=16.8 -> 16, 26*1.12=29.12 -> 29; y 5.6 -> 5, 16.8 -> 16. Tile 1 holds 1 of 13
    # columns: 7.7%, above 0.1 percent.
    assert authors_covering_tiles(box, AUTHORS_TILES) == [0, 1]
    # Truncation: 25.1*1.12 = 28.112 -> 28 ends exactly at tile 1's edge. The exact overlap (0.1/5.1 =
    # 2%) would pass a 0.1% test; the released int coordinates give tile 1 nothing.
    box = [20, 5, 25.1, 15]
    assert covering_tiles(box, AUTHORS_TILES, 0.001) == [0, 1]
    assert authors_covering_tiles(box, AUTHORS_TILES) == [0]
    # A box that truncates to zero width covers no tile at all (their zero-area branch).
    assert authors_covering_tiles([10, 10, 10.5, 20], AUTHORS_TILES) == []
    # Through char_targets with the rule: image tokens at prompt positions 7..10.
    page = ImageTokens(page=0, start=7, tile_boxes=AUTHORS_TILES)
    targets = char_targets([{0: [[15, 5, 26, 15]]}], [page], 0.001, rule="authors")
    assert targets == [{7, 8}]
    assert char_targets([{0: [[15, 5, 26, 15]]}], [page]) == [{7}]


def test_authors_score_only_the_first_occurrence():
    from ocr_heads.scores.rules import overlap_threshold, scored_occurrences

    page = ImageTokens(page=0, start=7, tile_boxes=AUTHORS_TILES)
    # One-character answer stated twice: first copy in tile 0 (position 7), second in tile 3 (position 10).
    occurrences = [{0: [[2, 2, 10, 10]]}, {0: [[30, 30, 40, 40]]}]
    ours = char_targets(scored_occurrences(occurrences, "produce"), [page], overlap_threshold("produce"))
    theirs = char_targets(scored_occurrences(occurrences, "authors"), [page], overlap_threshold("authors"),
                          rule="authors")
    assert ours == [{7, 10}] and theirs == [{7}]
    # A head reading the second copy hits under ours, not under theirs.
    argmax = torch.tensor([[[10]], [[10]]])  # (steps, layers, heads)
    token = [AnswerToken(0, (0, 1))]
    assert ocr_values(argmax, token, ours, 1.0, "authors").tolist() == [[[1.0]]]
    assert ocr_values(argmax, token, theirs, 1.0, "authors").tolist() == [[[0.0]]]
    assert overlap_threshold("produce") == 0.1 and overlap_threshold("authors") == 0.001
    assert overlap_threshold("authors", 0.25) == 0.25


def test_authors_argmax_leaves_out_the_last_prompt_position():
    from ocr_heads.attention import AttentionRecorder, row_statistics

    # Prompt of 5 positions; a decode row (6 keys) peaks on position 4, the prompt's last, then on 2.
    row = torch.tensor([[[0.05, 0.10, 0.25, 0.05, 0.40, 0.15]]])  # (batch=1, heads=1, keys)
    for exclude, expected in [(False, 4), (True, 2)]:
        recorder = AttentionRecorder(num_layers=1)
        recorder.reset(prompt_length=5, exclude_last_prompt=exclude)
        recorder.observe(0, *row_statistics(row, recorder.argmax_keys(), None))
        record = recorder.result()
        assert record.argmax.tolist() == [[[expected]]]
        assert record.keys == (4 if exclude else None)


def test_retrieval_authors_rule_leaves_out_the_last_prompt_key():
    """The released text script slices ``attn[row, :-len(generated)]`` like its OCR script: a decode row whose
    argmax falls on the prompt's last position P-1 is read at its best key in [0, P-1) instead."""
    from types import SimpleNamespace

    from ocr_heads.attention import AttentionRecorder, row_statistics
    from ocr_heads.attention.probes import PromptArgmax, PromptRowArgmax
    from ocr_heads.core.kinds import Alignment
    from ocr_heads.models.base import ModelInputs
    from ocr_heads.scores.base import Observed, Settings
    from ocr_heads.scores.registered.retrieval import SCORE

    prompt, generated, answer_ids = [1, 40, 41, 5, 9], [40, 41, 2], [40, 41]  # needle 40 41 at 1-2; P = 5
    inputs = ModelInputs({"input_ids": torch.tensor([prompt])})
    sample = SimpleNamespace(id="hand-built")
    settings = Settings(Alignment.AUTHORS)
    recording = SCORE.recording(sample, inputs, answer_ids, settings)
    assert recording.exclude_last_prompt
    # One layer, one head. Rows: the prefill's last (5 keys), then steps 1 and 2 (6 and 7 keys). Step 1 (the row
    # of generated 40) peaks on position 1 (token 40); step 2 (generated 41) peaks on P-1 (token 9), then on 2 (41).
    rows = [[0.2, 0.2, 0.2, 0.2, 0.2], [0.1, 0.5, 0.1, 0.1, 0.1, 0.1],
            [0.05, 0.05, 0.30, 0.05, 0.40, 0.10, 0.05]]
    recorder = AttentionRecorder(num_layers=1)
    recorder.reset(prompt_length=len(prompt), exclude_last_prompt=recording.exclude_last_prompt)
    for row in rows:
        recorder.observe(0, *row_statistics(torch.tensor([[row]]), recorder.argmax_keys(), None))
    record = recorder.result()
    prompt_rows = PromptArgmax({1: torch.tensor([[1]]), 2: torch.tensor([[2]])})  # prompt rows 1, 2 read themselves
    observed = Observed(sample, inputs, generated, ["40", "41", ""], answer_ids, 1.0, record, recording,
                        {PromptRowArgmax: prompt_rows})
    result = SCORE.values(observed, settings)
    # Events: prompt rows 1 and 2, generated 40 (step 1) and 41 (step 2): all four hit. With key P-1 in the
    # range, step 2's argmax would be position 4 (token 9) and the head would score 3/4.
    np.testing.assert_allclose(result.values, [[[1.0]]])
    assert result.events == 4
