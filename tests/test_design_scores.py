"""The design-space scores (ocr_mass, question_mass, first_token_mass, image_mass): their pure rules on a hand-built
sample whose values are worked out by hand, and end to end on the toy model against eager attention computed the
plain way (fp32, within 1e-5)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from ocr_heads import scores
from ocr_heads.attention import StepRecord
from ocr_heads.attention.probes import ImageAttention, ImageAttentionResult, KeyMass, PrefillKeyMass
from ocr_heads.core.kinds import KeyAggregation, QueryRows, Target
from ocr_heads.data.samples import Sample
from ocr_heads.models.base import ImageTokens, ModelInputs
from ocr_heads.scores.base import Observed, Settings

TOY_MODEL = Path(__file__).resolve().parents[1] / "models" / "toy-qwen2-vl"
NEW = ("ocr_mass", "question_mass", "first_token_mass", "image_mass")
NAN = float("nan")


def test_every_score_declares_its_point_in_the_design_space():
    registered = scores.all_scores()
    assert set(NEW) <= set(registered) and all(s.modality == "image" for s in map(registered.get, NEW))
    points = {name: (s.design.rows, s.design.keys, s.design.target) for name, s in registered.items()}
    assert points["ocr"] == (QueryRows.PRODUCING, KeyAggregation.ARGMAX, Target.EVIDENCE)
    assert points["ocr_mass"] == (QueryRows.PRODUCING, KeyAggregation.MASS, Target.EVIDENCE)
    assert points["retrieval"] == (QueryRows.PRODUCING, KeyAggregation.ARGMAX, Target.NEEDLE)
    assert points["prefill"] == (QueryRows.POST_IMAGE, KeyAggregation.MASS, Target.EVIDENCE)
    assert points["question_mass"] == (QueryRows.QUESTION, KeyAggregation.MASS, Target.EVIDENCE)
    assert points["first_token_mass"] == (QueryRows.FIRST_ANSWER, KeyAggregation.MASS, Target.EVIDENCE)
    assert points["image_mass"] == (QueryRows.PRODUCING, KeyAggregation.MASS, Target.IMAGE)
    assert len(set(points.values())) == len(points)  # no two scores are the same point
    assert all(s.design.paper for s in registered.values())
    with pytest.raises(ValueError):
        scores.DesignPoint("every_row", "mass", "image", "x")


# --- a hand-built sample -------------------------------------------------------------------------------------------
# One page of four 10 px tiles in a row, at prompt positions 2-5. Answer "ab": 'a' lies in tile 0 (position 2),
# 'b' straddles tiles 1 and 2 (positions 3, 4; half its box in each). The question sits at positions 6-7. The
# model writes " ", "a", "b", end: the answer tokens are generated tokens 1 and 2, produced at steps 1 and 2.
# Two layers of two heads; layer 1 has no attention rows (NaN): it never looks at a target.
KEYS = (2, 3, 4)  # the answer's tiles, the producing probe's positions


def hand_built(probe_results: dict, recording=None) -> Observed:
    sample = Sample("s0", "q?", "ab", "", [], {0: [[1, 1, 9, 9], [15, 1, 25, 9]]})
    tiles = np.array([[0, 0, 10, 10], [10, 0, 20, 10], [20, 0, 30, 10], [30, 0, 40, 10]], dtype=float)
    inputs = ModelInputs({"input_ids": torch.zeros(1, 10, dtype=torch.long)}, image_tokens=[ImageTokens(0, 2, tiles)],
                         question_positions=[6, 7])
    record = StepRecord(torch.zeros(4, 2, 2, dtype=torch.long), torch.zeros(4, 2, 2))
    return Observed(sample, inputs, [9, 1, 2, 0], [" ", "a", "b", ""], [1, 2], 0.5, record, recording,
                    probe_results)


def producing_result() -> ImageAttentionResult:
    attention = torch.full((4, 2, 2, 3), NAN)
    attention[:, 0] = 0.0
    attention[1, 0, 0] = torch.tensor([0.7, 0.1, 0.0])  # step 1 ('a'), l0_h0: mostly on tile 0
    attention[1, 0, 1] = torch.tensor([0.2, 0.2, 0.2])  # l0_h1: spread over the answer
    attention[2, 0, 0] = torch.tensor([0.0, 0.3, 0.3])  # step 2 ('b'), l0_h0: on b's two tiles
    attention[2, 0, 1] = torch.tensor([0.1, 0.0, 0.4])
    attention[0, 0, 0] = torch.tensor([0.9, 0.9, 0.9])  # step 0 writes " ": not an answer token, never read
    image = torch.full((4, 2, 2), NAN)
    image[:, 0] = torch.tensor([[0.99, 0.99], [0.9, 0.5], [0.8, 0.6], [0.99, 0.99]])
    return ImageAttentionResult(attention, {"image": image}, (0, 1), (0, 1))


def values_of(name: str, observed: Observed) -> np.ndarray:
    result = scores.get_score(name).values(observed, Settings())
    assert result.events == len(result.values)
    return result.values


def test_ocr_mass_hand_built():
    values = values_of("ocr_mass", hand_built({ImageAttention: producing_result()}))
    # 'a' (target {2}): l0_h0 0.7, l0_h1 0.2; 'b' (target {3, 4}): l0_h0 0.3 + 0.3, l0_h1 0.0 + 0.4; x recall 0.5.
    np.testing.assert_allclose(values, [[[0.35, 0.10], [0, 0]], [[0.30, 0.20], [0, 0]]], atol=1e-7)


def test_first_token_mass_hand_built():
    values = values_of("first_token_mass", hand_built({ImageAttention: producing_result()}))
    # One event: step 1, the first answer token, on all three tiles: l0_h0 0.8, l0_h1 0.6; x 0.5.
    np.testing.assert_allclose(values, [[[0.40, 0.30], [0, 0]]], atol=1e-7)
    silent = hand_built({ImageAttention: producing_result()})
    object.__setattr__(silent, "pieces", [" ", "x", "y", ""])  # no answer token written: no event
    assert values_of("first_token_mass", silent).shape == (0, 2, 2)


def test_image_mass_hand_built():
    values = values_of("image_mass", hand_built({ImageAttention: producing_result()}))
    # The producing rows of 'a' and 'b' (steps 1, 2) on the whole image, x 0.5; steps 0 and 3 are not events.
    np.testing.assert_allclose(values, [[[0.45, 0.25], [0, 0]], [[0.40, 0.30], [0, 0]]], atol=1e-7)


def test_question_mass_hand_built():
    mass = torch.full((2, 2, 2, 3), NAN)
    mass[0, 0] = torch.tensor([[0.5, 0.1, 0.1], [0.3, 0.2, 0.0]])  # l0_h0: question rows 6 and 7
    mass[0, 1] = torch.tensor([[0.0, 0.0, 0.6], [0.0, 0.0, 0.0]])  # l0_h1: row 6 on b's right half
    values = values_of("question_mass", hand_built({PrefillKeyMass: KeyMass((6, 7), KEYS, mass)}))
    # Mean over the two rows, x 0.5: 'a' l0_h0 (0.5 + 0.3) / 2, l0_h1 0; 'b' l0_h0 (0.2 + 0.2) / 2, l0_h1 0.6 / 2.
    np.testing.assert_allclose(values, [[[0.20, 0.0], [0, 0]], [[0.10, 0.15], [0, 0]]], atol=1e-7)


def test_recordings_of_the_hand_built_sample():
    observed = hand_built({})
    args = (observed.sample, observed.inputs, [1, 2], Settings())
    (producing,) = scores.get_score("ocr_mass").recording(*args).probes
    assert producing.positions == KEYS and dict(producing.groups) == {"image": (2, 3, 4, 5)}
    # The three producing-row mass scores declare one probe: a run of all three computes it once.
    for name in ("first_token_mass", "image_mass"):
        assert scores.get_score(name).recording(*args).probes == (producing,)
    (question,) = scores.get_score("question_mass").recording(*args).probes
    assert (question.rows, question.keys) == ((6, 7), KEYS)
    observed.inputs.question_positions = []
    with pytest.raises(ValueError, match="question 'q\\?' was not found"):
        scores.get_score("question_mass").recording(*args)


# --- end to end, against eager attention -----------------------------------------------------------------------------
@pytest.mark.skipif(not (TOY_MODEL / "config.json").is_file(), reason="toy checkpoint not present")
def test_design_scores_equal_eager_attention_on_the_toy_model(tmp_path):
    """Every new score through the runner, two samples batched (left padded), against values computed here from
    eager attention's full matrices (output_attentions), the plain way."""
    from ocr_heads.attention import capture, text_attention
    from ocr_heads.attention.eager import eager_attention_rows
    from ocr_heads.data.samples import load_samples
    from ocr_heads.models import load_adapter
    from ocr_heads.pipeline.sample_scoring import score_batch_scores
    from ocr_heads.scores.registered.ocr import answer_events, answer_targets
    from ocr_heads.toy.data import TOY_PROTOCOL, write_samples

    write_samples(tmp_path, 2, seed=5)
    adapter = load_adapter(str(TOY_MODEL), protocol=TOY_PROTOCOL)
    assert adapter.model.dtype == torch.float32
    samples = load_samples(tmp_path)
    with capture(adapter) as recorder:
        outcomes = score_batch_scores(adapter, recorder, samples, [scores.get_score(n) for n in NEW], Settings(), 8)
    for sample, outcome in zip(samples, outcomes, strict=True):
        first = outcome["ocr_mass"]
        inputs, generated, recall = first.inputs, first.generated, first.recall
        assert recall == 1.0 and inputs.question_positions  # the toy reads the key; its question was found
        decoded = adapter.decode(inputs.input_ids[0, inputs.question_positions].tolist())
        assert decoded == sample.question
        rows = eager_attention_rows(adapter, inputs, generated)  # layer -> (heads, steps, keys)
        producing = torch.stack([rows[layer] for layer in sorted(rows)]).double().numpy()  # (layers, heads, ...)
        with text_attention(adapter, "eager"), torch.no_grad():
            prefill = adapter.model(**inputs.tensors, output_attentions=True, use_cache=False).attentions
        question = torch.stack([a[0][:, inputs.question_positions] for a in prefill]).double().numpy()
        pieces = [adapter.decode(generated[: k + 1]) for k in range(len(generated))]
        pieces = [text[len(before):] for before, text in zip(["", *pieces], pieces, strict=False)]
        seen = Observed(sample, inputs, generated, pieces, [], recall, first.record, None)
        events = answer_events(seen, "produce")
        targets = answer_targets(sample, inputs, Settings())
        assert len(events) == 5
        tiles = [sorted(set().union(*targets[t.chars[0] : t.chars[1]])) for t in events]
        everything = sorted(set().union(*targets))
        image = [p for tokens in inputs.image_tokens for p in tokens.positions]
        expected = {
            "ocr_mass": [producing[:, :, t.index, cols].sum(-1) for t, cols in zip(events, tiles, strict=True)],
            "first_token_mass": [producing[:, :, events[0].index, everything].sum(-1)],
            "image_mass": [producing[:, :, t.index, image].sum(-1) for t in events],
            "question_mass": [question[:, :, :, cols].sum(-1).mean(-1) for cols in tiles],
        }
        for name, reference in expected.items():
            np.testing.assert_allclose(outcome[name].scored.values, np.stack(reference) * recall, atol=1e-5, rtol=0,
                                       err_msg=name)
