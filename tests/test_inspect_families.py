"""`python -m ocr_heads.inspect --json` on every family's tiny model, under both protocols: the token count is
the image-token ids in the prompt, one tile (or null, for a position without page pixels) per token, in order."""

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from ocr_heads import inspect
from ocr_heads.models import load_adapter
from ocr_heads.models.tiny.build import builders, page_families

STEP1_PAGE = (635, 482)
# Tokens on a 635 x 482 page, worked by hand from each family's published geometry (the tiny models keep it).
# Qwen paper: min = max = 256 tiles of the family's tile size; smart_resize keeps the aspect ratio:
#   28 px: 256*28*28 = 200704 px, 482x635 -> 13 x 18 tiles = 234; 32 px: 262144 px -> 13 x 18 = 234.
# InternVL paper: one 448 px tile, 16 x 16 = 256. Gemma 3: one 896 px square pooled to 16 x 16 = 256.
# LLaVA-OneVision (paper = native): 27 x 27 base features; best pinpoint 768 x 768 (2 x 2 crops, 54 x 54 cells),
#   unpadded to the page's aspect: 54 * 482 / 635 = 40.99 -> 54 - 2 * ((54 - 40) // 2) = 40 rows x 54 columns,
#   plus one newline per row: 729 + 40 * 55 = 2929 tokens, 40 of them without page pixels.
# SmolVLM / Idefics3 paper: the global image alone, one 512 px tile of 16 px patches pixel-shuffled by 4: 8 x 8 = 64
#   (native: 635 x 482 -> 2048 x 1554 -> 2048 x 2048, 4 x 4 tiles + the global image: 17 x 64 = 1088).
PAPER_TOKENS = {"qwen2_vl": 234, "qwen2_5_vl": 234, "qwen3_vl": 234, "qwen3_vl_moe": 234, "qwen3_5": 234,
                "internvl": 256, "llava_onevision": 2929, "gemma3": 256, "smolvlm": 64, "idefics3": 64}
NATIVE_TOKENS = {"smolvlm": 1088, "idefics3": 1088}
NO_PIXEL_TOKENS = {"llava_onevision": 40}
FAMILIES = sorted(PAPER_TOKENS)


@pytest.fixture(scope="module")
def page_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("page") / "page.png"
    page = Image.new("RGB", STEP1_PAGE, "white")
    ImageDraw.Draw(page).text((20, 20), "The pass key is 48213.", fill="black")
    page.save(path)
    return path


def test_every_tiny_family_is_covered():
    assert page_families() == FAMILIES  # the text-only LMs read no pages (tests/test_family_text_lm.py)
    assert sorted(set(builders()) - set(FAMILIES)) == ["internlm2", "qwen2"]


@pytest.mark.parametrize("protocol", ["paper", "native"])
@pytest.mark.parametrize("family", FAMILIES)
def test_inspect_json_on_every_family(family_dir, page_png, capsys, family, protocol):
    model_dir = family_dir(family)
    assert inspect.main(["--model_id", str(model_dir), "--image", str(page_png), "--protocol", protocol,
                         "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["protocol"] == protocol

    adapter = load_adapter(str(model_dir), protocol=protocol, weights=False)
    inputs = adapter.image_inputs([Image.open(page_png)], "What is the pass key?")
    in_prompt = int((inputs.input_ids == adapter.image_token_id).sum())
    # The ids the prompt carries, the settings' own arithmetic, and (paper) the hand-computed count agree.
    assert result["image_tokens"] == in_prompt == adapter.expected_tokens(STEP1_PAGE)
    if protocol == "paper":
        assert in_prompt == PAPER_TOKENS[family]
    elif family in NATIVE_TOKENS:
        assert in_prompt == NATIVE_TOKENS[family]

    tiles = result["tiles"]
    assert len(tiles) == in_prompt
    boxes = np.concatenate([tokens.tile_boxes for tokens in inputs.image_tokens])
    shown = [tile is not None for tile in tiles]
    np.testing.assert_array_equal(shown, ~np.isnan(boxes).any(axis=1))  # null exactly where no pixels, in order
    assert len(tiles) - sum(shown) == NO_PIXEL_TOKENS.get(family, 0)
    kept = np.array([tile for tile in tiles if tile is not None])
    np.testing.assert_allclose(kept, boxes[np.array(shown)])
    width, height = STEP1_PAGE
    eps = 1e-6  # boxes are float multiples of the page size
    assert (kept[:, :2] >= -eps).all() and (kept[:, 2] <= width + eps).all() and (kept[:, 3] <= height + eps).all()
    assert (kept[:, 2] > kept[:, 0]).all() and (kept[:, 3] > kept[:, 1]).all()


def test_inspect_gemma3_pan_and_scan_crops_follow_the_page(family_dir, page_png, capsys):
    """With pan-and-scan on, the crops' runs follow the page's in one list: 635 / 482 = 1.32 >= 1.2 activates it,
    floor(1.32 + 0.5) = 1 is raised to 2 crops of ceil(635 / 2) = 318 >= 256 px: 3 x 256 tokens."""
    adapter = load_adapter(str(family_dir("gemma3")), pan_and_scan=True, weights=False)
    assert adapter.expected_tokens(STEP1_PAGE) == 3 * 256
    view = inspect.view_page(adapter, Image.open(page_png))
    assert view.image_tokens == 3 * 256
    np.testing.assert_allclose(view.tiles[255], [635 * 15 / 16, 482 * 15 / 16, 635, 482])  # page's last token
    np.testing.assert_allclose(view.tiles[256], [0, 0, 318 / 16, 482 / 16])  # first crop's first token


@pytest.mark.parametrize(("family", "keys"), [("llava_onevision", ["image_token_index", "video_token_index"]),
                                              ("gemma3", ["image_token_index", "boi_token_index",
                                                          "eoi_token_index"])])
def test_doctor_checks_the_hub_token_index_keys(family_dir, tmp_path, family, keys):
    """These families' config.json name their tokens *_index (as published); doctor compares each with the
    tokenizer, and a wrong one fails."""
    import shutil

    from ocr_heads.doctor import FAIL, OK, check_token_ids

    check = check_token_ids(str(family_dir(family)))
    assert check.status == OK and [part.split("=")[0] for part in check.detail.split(", ")] == keys
    broken = tmp_path / family
    shutil.copytree(family_dir(family), broken)
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, keys[0]: config[keys[0]] + 1}))
    assert check_token_ids(str(broken)).status == FAIL
