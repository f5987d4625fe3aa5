"""Metrics against values computed by hand (the edit distances are spelled out in comments)."""

from __future__ import annotations

import pytest

from ocr_heads.tasks.metrics import (
    aggregate,
    anls,
    exact_match,
    f1,
    levenshtein,
    mean,
    normalize_answer,
    passkey_accuracy,
    score_all,
)


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [
        ("kitten", "sitting", 3),  # k->s, e->i, insert g
        ("flaw", "lawn", 2),  # delete f, insert n
        ("", "abc", 3),
        ("abc", "abc", 0),
        ("東京都", "東京", 1),  # delete 都
    ],
)
def test_levenshtein(a: str, b: str, distance: int) -> None:
    assert levenshtein(a, b) == distance
    assert levenshtein(b, a) == distance


class TestAnls:
    def test_exact_after_lowercase_and_strip(self) -> None:
        assert anls("  PARIS \n", ["paris"]) == 1.0

    def test_partial(self) -> None:
        # kitten/sitting: distance 3, longest 7 -> NL 3/7 < 0.5 -> 1 - 3/7 = 4/7
        assert anls("kitten", ["sitting"]) == pytest.approx(4 / 7)

    def test_one_char_short(self) -> None:
        # abc/abcd: distance 1 (insert d), longest 4 -> NL 0.25 -> 0.75
        assert anls("abc", ["abcd"]) == pytest.approx(0.75)

    def test_exactly_at_threshold_scores_zero(self) -> None:
        # abxy/abcd: distance 2 (x->c, y->d), longest 4 -> NL = 0.5, not < 0.5 -> 0
        assert anls("abxy", ["abcd"]) == 0.0
        # abcxyz/abcdef: distance 3, longest 6 -> NL = 0.5 -> 0
        assert anls("abcxyz", ["abcdef"]) == 0.0

    def test_just_below_threshold_keeps_similarity(self) -> None:
        # abxye/abcde: distance 2 (x->c, y->d), longest 5 -> NL 0.4 -> 0.6
        assert anls("abxye", ["abcde"]) == pytest.approx(0.6)

    def test_threshold_is_a_parameter(self) -> None:
        # NL 0.5 < 0.6 -> kept: 1 - 0.5
        assert anls("abxy", ["abcd"], threshold=0.6) == pytest.approx(0.5)

    def test_max_over_golds(self) -> None:
        # 1990 vs 1989: distance 2, longest 4 -> NL 0.5 -> 0
        # 1990 vs 1990s: distance 1, longest 5 -> NL 0.2 -> 0.8
        # 1990 vs "nineteen ninety": distance >= 11 (length gap), -> 0
        assert anls("1990", ["1989", "1990s", "nineteen ninety"]) == pytest.approx(0.8)

    def test_empty_prediction(self) -> None:
        # distance 3, longest 3 -> NL 1 -> 0
        assert anls("", ["abc"]) == 0.0
        assert anls("   ", ["abc"]) == 0.0

    def test_empty_gold(self) -> None:
        assert anls("", [""]) == 1.0  # identical strings
        assert anls("abc", [""]) == 0.0  # distance 3, longest 3 -> NL 1
        assert anls("abc", ["", "abd"]) == pytest.approx(2 / 3)  # abd: distance 1, longest 3

    def test_unicode(self) -> None:
        # café/cafe: distance 1 (é->e), longest 4 -> 0.75; no accent stripping
        assert anls("Café", ["cafe"]) == pytest.approx(0.75)
        # lower() maps É to é
        assert anls("ÉCOLE", ["école"]) == 1.0
        # decomposed e + U+0301 equals precomposed é after NFC
        assert anls("cafe\u0301", ["café"]) == 1.0
        # 東京都/東京: distance 1, longest 3 -> NL 1/3 -> 2/3
        assert anls("東京都", ["東京"]) == pytest.approx(2 / 3)


class TestExactMatch:
    def test_squad_normalisation(self) -> None:
        assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
        assert normalize_answer("An apple, a day.") == "apple day"
        assert exact_match("The Eiffel Tower!", ["eiffel tower"]) == 1.0

    def test_mismatch(self) -> None:
        assert exact_match("Eiffel", ["eiffel tower"]) == 0.0

    def test_max_over_golds(self) -> None:
        assert exact_match("Obama", ["Barack Obama", "obama"]) == 1.0

    def test_empty(self) -> None:
        assert exact_match("", [""]) == 1.0
        assert exact_match("", ["x"]) == 0.0
        assert exact_match("x", [""]) == 0.0
        # SQuAD quirk kept: an article alone normalises to the empty string
        assert exact_match("the", [""]) == 1.0

    def test_unicode(self) -> None:
        assert exact_match("“Paris”", ["Paris"]) == 1.0  # curly quotes are punctuation
        assert exact_match("東京。", ["東京"]) == 1.0  # so is the ideographic full stop
        assert exact_match("Zürich", ["zurich"]) == 0.0  # accents are kept
        assert exact_match("ZÜRICH", ["zürich"]) == 1.0


class TestF1:
    def test_partial_overlap(self) -> None:
        # pred tokens: big red dog barked (4; "the" dropped); gold: red dog (2; "a" dropped)
        # common = {red, dog} = 2 -> P = 2/4, R = 2/2 -> F1 = 2 * 0.5 * 1 / 1.5 = 2/3
        assert f1("The big red dog barked", ["a red dog"]) == pytest.approx(2 / 3)

    def test_repeated_tokens_count_once_each(self) -> None:
        # pred [new, new, york], gold [new, york, city]: common new x1 + york x1 = 2
        # P = 2/3, R = 2/3 -> F1 = 2/3
        assert f1("new new york", ["New York City"]) == pytest.approx(2 / 3)

    def test_max_over_golds(self) -> None:
        # vs "blue cat": 0; vs "red dog park": common 2, P = 2/2, R = 2/3 -> F1 = 0.8
        assert f1("red dog", ["blue cat", "red dog park"]) == pytest.approx(0.8)

    def test_empty(self) -> None:
        assert f1("", ["x"]) == 0.0
        assert f1("x", [""]) == 0.0
        assert f1("", [""]) == 1.0
        assert f1("The.", ["a"]) == 1.0  # both normalise to no tokens

    def test_unicode(self) -> None:
        # tokens [東京, タワー] vs [東京]: common 1, P = 1/2, R = 1 -> 2/3
        assert f1("東京 タワー", ["東京"]) == pytest.approx(2 / 3)
        assert f1("Café", ["café"]) == 1.0


class TestPasskey:
    def test_substring(self) -> None:
        assert passkey_accuracy("The pass key is 48213.", ["48213"]) == 1.0

    def test_wrong_digits(self) -> None:
        assert passkey_accuracy("48231", ["48213"]) == 0.0

    def test_empty(self) -> None:
        assert passkey_accuracy("", ["48213"]) == 0.0
        assert passkey_accuracy("anything", [""]) == 0.0  # an empty gold matches nothing

    def test_max_over_golds_and_case(self) -> None:
        assert passkey_accuracy("key: 48213", ["99", "48213"]) == 1.0
        assert passkey_accuracy("ANSWER: ÀB7", ["àb7"]) == 1.0


@pytest.mark.parametrize("metric", [anls, exact_match, f1, passkey_accuracy])
def test_bad_golds_are_rejected(metric) -> None:
    with pytest.raises(ValueError, match="at least one gold"):
        metric("x", [])
    with pytest.raises(TypeError, match="list of strings"):
        metric("x", "x")


@pytest.mark.parametrize("metric", [anls, exact_match, f1, passkey_accuracy])
def test_range(metric) -> None:
    for pred, golds in [("", [""]), ("a b", ["b c"]), ("xyz", ["abc"]), ("東", ["東京"])]:
        assert 0.0 <= metric(pred, golds) <= 1.0


def test_score_all_and_aggregate() -> None:
    scores = [score_all(pred, ["red dog"], ["em", "f1"]) for pred in ["red dog", "red cat"]]
    # "red cat": common 1, P = 1/2, R = 1/2 -> F1 0.5
    assert scores == [{"em": 1.0, "f1": 1.0}, {"em": 0.0, "f1": 0.5}]
    assert aggregate(scores) == {"em": 0.5, "f1": 0.75, "n": 2}
    assert aggregate(scores, ["f1"]) == {"f1": 0.75, "n": 2}
    assert aggregate([]) == {"n": 0}
    with pytest.raises(KeyError, match="missing"):
        aggregate([{"em": 1.0}, {"f1": 1.0}])
    with pytest.raises(KeyError, match="unknown metric"):
        score_all("x", ["x"], ["bleu"])


def test_mean() -> None:
    assert mean([1.0, 0.0, 0.5]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no scores"):
        mean([])
    with pytest.raises(ValueError, match="NaN"):
        mean([float("nan")])
