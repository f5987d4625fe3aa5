import os

# Tests never touch the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Qwen2-VL saved with save_pretrained (built once per test session)."""
    from ocr_heads.models.tiny import build_tiny_qwen2_vl

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
