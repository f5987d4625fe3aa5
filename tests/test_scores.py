"""The score registry and the prefill score's rule, on hand-built cases with values computed by hand."""

from pathlib import Path

import numpy as np
import pytest
import torch

from ocr_heads import scores
from ocr_heads.models.base import ImageTokens, ModelInputs
from ocr_heads.scores.registered.prefill import post_image_rows, prefill_values
from ocr_heads.scores.rules import AnswerToken


def test_registry_lists_every_score_module():
    registered = scores.all_scores()
    assert {"ocr", "retrieval", "prefill"} <= set(registered)
    assert (registered["ocr"].tag, registered["ocr"].modality) == ("fg", "image")
    assert (registered["retrieval"].tag, registered["retrieval"].modality) == ("te", "text")
    assert (registered["prefill"].tag, registered["prefill"].modality) == ("prefill", "image")
    assert scores.by_tag("cg") is registered["ocr"]  # the authors' coarse-grained OCR files
    assert scores.by_tag("zz") is None
    lines = scores.listing().splitlines()
    assert len(lines) == len(registered) and all(line.split()[0] in registered for line in lines)
    with pytest.raises(ValueError, match=r"(?s)unknown score 'nope'.*\nocr "):
        scores.get_score("nope")
    assert scores.default_score("image").name == "ocr" and scores.default_score("text").name == "retrieval"


def test_post_image_rows_skip_the_producing_row():
    tiles = np.zeros((4, 4))
    inputs = ModelInputs({"input_ids": torch.zeros(1, 12, dtype=torch.long)},
                         image_tokens=[ImageTokens(0, 2, tiles[:2]), ImageTokens(1, 5, tiles)])
    # Image tokens at 2-3 and 5-8; the prompt ends at 11, whose row produces the first answer token.
    assert post_image_rows(inputs) == [9, 10]
    assert post_image_rows(ModelInputs({"input_ids": torch.zeros(1, 5, dtype=torch.long)})) == []


def test_prefill_values_hand_built():
    # 2 layers x 2 heads, 3 post-image rows, recorded keys = tiles at prompt positions 10, 11, 12.
    mass = np.zeros((2, 2, 3, 3))
    mass[0, 0, 1] = [0.6, 0.1, 0.0]  # l0_h0: row 1 reads tile 10
    mass[0, 1, 0] = [0.3, 0.3, 0.3]  # l0_h1: spread, never 0.5 on one tile, 0.6 on tiles 11+12
    mass[1, 0, 2] = [0.0, 0.25, 0.25]  # l1_h0: 0.5 on tiles 11+12 together: exactly the threshold
    mass[1, 1, :, 0] = [0.45, 0.49, 0.2]  # l1_h1: close to tile 10 in every row, never 0.5
    keys = [10, 11, 12]
    # Answer "ab": 'a' shown on tile 10, 'b' straddles tiles 11 and 12. Token 0 spells 'a', token 1 'b'.
    targets = [{10}, {11, 12}]
    events = [AnswerToken(0, (0, 1)), AnswerToken(1, (1, 2))]
    values = prefill_values(mass, keys, events, targets, recall=0.5)
    assert values.shape == (2, 2, 2)
    np.testing.assert_allclose(values[0], [[0.5, 0.0], [0.0, 0.0]])  # 'a': only l0_h0 (0.6 >= 0.5)
    np.testing.assert_allclose(values[1], [[0.0, 0.5], [0.5, 0.0]])  # 'b': l0_h1 (0.6), l1_h0 (0.5)
    # A token spelling both characters targets all three tiles: l0_h1 (0.9), l0_h0 (0.7), l1_h0 (0.5).
    both = prefill_values(mass, keys, [AnswerToken(0, (0, 2))], targets, recall=1.0)
    np.testing.assert_allclose(both[0], [[1.0, 1.0], [1.0, 0.0]])
    # A stricter threshold, a character with no tile, and no rows at all.
    np.testing.assert_allclose(prefill_values(mass, keys, events, targets, 1.0, threshold=0.55)[:, 1, 0], [0, 0])
    assert not prefill_values(mass, keys, events, [set(), set()], 1.0).any()
    assert prefill_values(np.zeros((2, 2, 0, 0)), [], events, [set(), set()], 1.0).shape == (2, 2, 2)


def test_score_files_know_every_registered_tag(tmp_path):
    from ocr_heads.scores.files import KINDS, infer_from_name, load_scores, save_scores

    assert set(KINDS) == set(scores.all_scores())
    assert infer_from_name("toy-qwen2-vl_prefill.json") == ("prefill", "toy-qwen2-vl")
    assert infer_from_name("toy-qwen2-vl_prefill_mean.json") == ("prefill", "toy-qwen2-vl")
    meta = {"kind": "prefill", "model": "toy", "num_layers": 1, "num_heads": 2}
    save_scores(tmp_path / "toy_prefill.json", {"l0_h0": [0.5, 0.0], "l0_h1": [1.0, 1.0]}, meta)
    loaded = load_scores(tmp_path / "toy_prefill.json")
    assert (loaded.kind, loaded.means) == ("prefill", {"l0_h0": 0.25, "l0_h1": 1.0})


TOY_MODEL = Path(__file__).resolve().parents[1] / "models" / "toy-qwen2-vl"


@pytest.mark.skipif(not (TOY_MODEL / "config.json").is_file(), reason="toy checkpoint not present")
def test_prefill_score_finds_the_toy_models_layer0_readers(tmp_path):
    """The toy model reads digits 3-5 into the question with layer-0 heads at prefill (docs/toy_model.md):
    the prefill score ranks layer-0 heads first; the OCR score ranks the layer-1 heads that read at the
    producing rows first. Both through the registry, on the same generations."""
    from ocr_heads.attention import capture
    from ocr_heads.data.samples import load_samples
    from ocr_heads.models import load_adapter
    from ocr_heads.pipeline.sample_scoring import score_sample
    from ocr_heads.toy.data import TOY_PROTOCOL, write_samples

    write_samples(tmp_path, 3, seed=11)
    adapter = load_adapter(str(TOY_MODEL), protocol=TOY_PROTOCOL)
    rows = {"ocr": [], "prefill": []}
    with capture(adapter) as recorder:
        for sample in load_samples(tmp_path):
            for name, found in rows.items():
                result = score_sample(adapter, recorder, sample, scores.get_score(name), scores.Settings(), 6)
                assert result.recall == 1.0 and result.scored.events == 5
                found.append(result.scored.values)
    top = {}
    for name, found in rows.items():
        means = np.concatenate(found).mean(axis=0)  # (layers, heads)
        order = np.argsort(-means, axis=None, kind="stable")[:5]
        top[name] = [divmod(int(i), means.shape[1]) for i in order]
    assert {layer for layer, _ in top["prefill"]} == {0}, top
    assert {layer for layer, _ in top["ocr"]} == {1}, top


def test_paths_follow_the_registry():
    from ocr_heads.core.paths import model_name
    from ocr_heads.scores.files import heads_file, score_file

    assert model_name("Qwen/Qwen2-VL-2B-Instruct") == model_name("/m/Qwen2-VL-2B-Instruct/") == "Qwen2-VL-2B-Instruct"
    assert score_file("scores", "M", "ocr") == score_file("scores", "M", "fg") == Path("scores/image/M_fg.json")
    assert score_file("s", "M", scores.get_score("retrieval")) == Path("s/text/M_te.json")
    assert score_file("s", "M", "prefill") == Path("s/image/M_prefill.json")
    assert heads_file("s", "M", "te", "authors") == Path("s/heads/M_te_authors.json")
    with pytest.raises(ValueError, match="unknown score"):
        score_file("s", "M", "xx")
