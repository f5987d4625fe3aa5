"""Full-size smoke (``make smoke``): step2 end to end on Qwen2-VL-2B's real architecture, random weights."""

import json

import pytest


@pytest.mark.slow
def test_full_size_step2_runs_end_to_end(tmp_path):
    from ocr_heads.smoke import main

    assert main(["--out", str(tmp_path)]) == 0
    meta = json.loads((tmp_path / "scores" / "image" / "Qwen2-VL-2B-random_fg.meta.json").read_text())
    assert (meta["num_layers"], meta["num_heads"], meta["num_kv_heads"]) == (28, 12, 2)
