import os

# Tests never touch the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Qwen2-VL saved with save_pretrained (built once per test session)."""
    from ocr_heads.models.tiny.build import build_tiny_qwen2_vl

    return build_tiny_qwen2_vl(tmp_path_factory.mktemp("models") / "tiny-qwen2-vl", seed=0)


@pytest.fixture(scope="session")
def tiny_adapter(tiny_model_dir):
    from ocr_heads.models import load_adapter

    return load_adapter(str(tiny_model_dir))


@pytest.fixture(scope="session")
def passkey_dir(tmp_path_factory):
    """Six small passkey samples (1-2 pages each)."""

    from ocr_heads.data import haystack
    from ocr_heads.data.samples import generate_samples

    out = tmp_path_factory.mktemp("step1")
    generate_samples(out, "passkey", 3, [128, 300], 1, haystack.embedded_corpus(),
                     lambda rng: haystack.passkey_needle(rng), source="embedded")
    return out


HUB_METADATA = os.path.join(os.path.dirname(__file__), "fixtures", "hub")


@pytest.fixture(scope="session")
def qwen2_vocab_tokenizer_dir():
    """The real Qwen2 vocabulary (dashscope's qwen.tiktoken, converted once and cached under $OCR_HEADS_CACHE,
    default ~/.cache/ocr_heads). Fetches the wheel from PyPI on first use; skips when it cannot be had."""
    from ocr_heads.models.tiny.qwen2_vocab import VocabUnavailable, qwen2_tokenizer_dir

    try:
        return qwen2_tokenizer_dir()
    except VocabUnavailable as err:
        pytest.skip(f"the real Qwen2 vocabulary cannot be had here: {err}")


@pytest.fixture(scope="session")
def hub_qwen2_vl_dir(tmp_path_factory):
    """A tiny random Qwen2-VL-2B-Instruct built from the published metadata in tests/fixtures/hub (hub-format
    config.json with sizes shrunk, the published preprocessor/generation/tokenizer configs and chat template).
    Its tokenizer is the real Qwen2 vocabulary when it can be had (PyPI or the cache), else a character-level
    stand-in with every special token at its published id; ``ocr_heads_fixture.json`` says which ("vocab")."""
    from ocr_heads.models.hub_fixture import build_hub_fixture

    return build_hub_fixture(os.path.join(HUB_METADATA, "Qwen2-VL-2B-Instruct"),
                             tmp_path_factory.mktemp("hub") / "Qwen2-VL-2B-Instruct", vocab="auto")


@pytest.fixture(scope="session")
def hub_internvl2_dir(tmp_path_factory):
    """A tiny random InternVL2-8B in InternVL2's own (remote-code) layout, from the published config.json and
    tokenizer_config.json with sizes shrunk. InternLM2's sentencepiece vocabulary cannot be had offline, so its
    tokenizer is a character-level stand-in with every published special token at its published id.
    ``load_adapter`` converts it on first load into $OCR_HEADS_CACHE/converted: point that at a tmp dir
    (monkeypatch.setenv) in tests."""
    from ocr_heads.models.hub_fixture import build_hub_fixture

    return build_hub_fixture(os.path.join(HUB_METADATA, "InternVL2-8B"),
                             tmp_path_factory.mktemp("hub") / "InternVL2-8B", vocab="char")


@pytest.fixture(scope="session")
def family_dir(tmp_path_factory):
    """``family_dir(family)``: that family's tiny model (``ocr_heads.models.tiny``), built on first use and
    shared by the whole session."""
    from ocr_heads.models.tiny.build import builders

    root = tmp_path_factory.mktemp("families")
    built = {}

    def get(family: str):
        if family not in built:
            built[family] = builders()[family](root / f"tiny-{family}")
        return built[family]

    return get
