"""The tiny LLaVA-OneVision, Gemma 3, InternVL3/3.5 and SmolVLM models keep their published checkpoint's geometry.

Every expected value is read from the published files in configs/hub (never a constant here): the fields that
decide which pixels an image token shows stay equal, the sizes are shrunk, the token ids point at the published
special-token strings in the tiny tokenizer, and the processor file is the published one, byte for byte.
"""

import json

import pytest
from transformers import AutoTokenizer

from ocr_heads.models import load_adapter
from ocr_heads.models.tiny.hub_configs import HUB_CONFIGS, read_back

# family (and builder options) -> (published checkpoint, geometry fields compared at the top level and in
# vision_config, token-id fields and the published string each names).
CASES = {
    "gemma3": ("gemma-3-4b-it", {}, ["mm_tokens_per_image"], ["image_size", "patch_size"],
               {"image_token_index": "<image_soft_token>", "boi_token_index": "<start_of_image>",
                "eoi_token_index": "<end_of_image>"}),
    "llava_onevision": ("llava-onevision-qwen2-0.5b-ov-hf", {},
                        ["image_grid_pinpoints", "vision_aspect_ratio", "vision_feature_select_strategy",
                         "vision_feature_layer", "use_image_newline_parameter"], ["image_size", "patch_size"],
                        {"image_token_index": "<image>", "video_token_index": "<video>"}),
    "internvl": ("InternVL3_5-1B-HF", {}, ["downsample_ratio", "image_seq_length", "vision_feature_layer",
                                           "vision_feature_select_strategy"], ["image_size", "patch_size"],
                 {"image_token_id": "<IMG_CONTEXT>"}),
    "internvl3": ("InternVL3-1B-hf", {"language_model": "qwen2"}, ["downsample_ratio", "image_seq_length"],
                  ["image_size", "patch_size"], {"image_token_id": "<IMG_CONTEXT>"}),
    "smolvlm": ("SmolVLM2-500M-Video-Instruct", {}, ["scale_factor"], ["image_size", "patch_size"],
                {"image_token_id": "<image>"}),
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """name -> (model dir, its config.json, the published config.json); each tiny model built once."""
    from ocr_heads.models.tiny.build import builders

    cache = {}

    def get(name: str):
        if name not in cache:
            checkpoint, options, *_ = CASES[name]
            builder = builders()["internvl" if name == "internvl3" else name]
            out = builder(tmp_path_factory.mktemp("hub") / name, **options)
            cache[name] = (out, json.loads((out / "config.json").read_text()),
                           json.loads((HUB_CONFIGS / checkpoint / "config.json").read_text()))
        return cache[name]

    return get


@pytest.mark.parametrize("name", sorted(CASES))
def test_geometry_is_the_published_files_and_sizes_are_shrunk(built, name):
    out, tiny, published = built(name)
    checkpoint, _, top_fields, vision_fields, token_fields = CASES[name]
    assert {f: tiny[f] for f in top_fields} == {f: published[f] for f in top_fields}
    assert {f: tiny["vision_config"][f] for f in vision_fields} == \
        {f: published["vision_config"][f] for f in vision_fields}
    assert tiny["text_config"]["model_type"] == read_back(published).text_config.model_type
    # Sizes: the tiny model's are far below the published ones.
    theirs = read_back(published)
    assert tiny["text_config"]["hidden_size"] * 8 <= theirs.text_config.hidden_size
    assert tiny["text_config"]["num_hidden_layers"] < theirs.text_config.num_hidden_layers
    assert tiny["vision_config"]["hidden_size"] * 8 <= theirs.vision_config.hidden_size
    # Token ids point at the published special-token strings in the tiny tokenizer.
    tokenizer = AutoTokenizer.from_pretrained(out)
    for field, token in token_fields.items():
        assert tokenizer.convert_ids_to_tokens(tiny.get(field, tiny.get(field.replace("_index", "_id")))) == token
    # The processor file is the published one, byte for byte.
    assert (out / "preprocessor_config.json").read_bytes() == \
        (HUB_CONFIGS / checkpoint / "preprocessor_config.json").read_bytes()


def test_gemma3_keeps_the_published_layer_pattern_and_window(built):
    _, tiny, published = built("gemma3")
    theirs = read_back(published).text_config  # what transformers makes of the published file
    text = tiny["text_config"]
    assert text["layer_types"] == theirs.layer_types[: text["num_hidden_layers"]]
    assert text["layer_types"].count("full_attention") == 1  # 5 sliding, then 1 global: one period
    assert text["sliding_window"] == theirs.sliding_window
    assert text["query_pre_attn_scalar"] / text["head_dim"] == theirs.query_pre_attn_scalar / theirs.head_dim
    assert text["rope_parameters"]["full_attention"] == theirs.rope_parameters["full_attention"]


def test_gemma3_null_pan_and_scan_settings_follow_the_processor(built):
    """The published file leaves pan-and-scan null; the adapter fills it as Gemma3Processor does at call time,
    so the paper protocol (off), the native one (the file's null: off) and an explicit request all work."""
    from transformers.models.gemma3.processing_gemma3 import Gemma3Processor

    out, _, _ = built("gemma3")
    assert json.loads((out / "preprocessor_config.json").read_text())["pan_and_scan_min_crop_size"] is None
    defaults = Gemma3Processor.images_kwargs
    for protocol in ("paper", "native"):
        assert load_adapter(str(out), protocol=protocol, weights=False).settings()["pan_and_scan"] is False
    scan = load_adapter(str(out), pan_and_scan=True, weights=False)
    assert scan.settings() == {"protocol": "paper", "tokens_per_image": 256, "pan_and_scan": True,
                               "min_crop_size": defaults["pan_and_scan_min_crop_size"],
                               "max_num_crops": defaults["pan_and_scan_max_num_crops"],
                               "min_ratio_to_activate": defaults["pan_and_scan_min_ratio_to_activate"]}


@pytest.mark.parametrize("name", ["internvl", "internvl3"])
def test_internvl_protocols_on_the_published_processor(built, name):
    """paper: one tile; native: the published max_patches (its crop_to_patches false is overridden by the
    adapter, as InternVLProcessor does at call time)."""
    out, _, _ = built(name)
    processor = json.loads((out / "preprocessor_config.json").read_text())
    assert processor["crop_to_patches"] is False
    paper = load_adapter(str(out), weights=False)
    native = load_adapter(str(out), protocol="native", weights=False)
    assert (paper.max_patches, native.max_patches) == (1, processor["max_patches"])
    assert paper.expected_tokens((635, 482)) == 256
    # 635 x 482 under max 12 tiles: 4 x 3 tiles (aspect 1.33) + a thumbnail.
    assert native.expected_tokens((635, 482)) == (4 * 3 + 1) * 256
