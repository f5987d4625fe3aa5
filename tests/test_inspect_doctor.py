"""`python -m ocr_heads.inspect` (JSON contract, overlay) and `python -m ocr_heads.doctor` (exit codes)."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw

from ocr_heads import doctor, inspect
from ocr_heads.models import load_adapter
from tests.hub_format import hub_format_qwen2_vl


@pytest.fixture(scope="module")
def hub_dir(tiny_model_dir, tmp_path_factory):
    return hub_format_qwen2_vl(tiny_model_dir, tmp_path_factory.mktemp("hub") / "Qwen2-VL-2B-Instruct-tiny")


@pytest.fixture(scope="module")
def internvl_dir(tmp_path_factory):
    from ocr_heads.models.tiny.build import build_tiny_internvl

    return build_tiny_internvl(tmp_path_factory.mktemp("models") / "tiny-internvl")


@pytest.fixture(scope="module")
def page_png(tmp_path_factory):
    path = tmp_path_factory.mktemp("page") / "page.png"
    page = Image.new("RGB", (635, 482), "white")
    ImageDraw.Draw(page).text((20, 20), "The pass key is 48213.", fill="black")
    page.save(path)
    return path


def last_json(capsys) -> dict:
    out = capsys.readouterr().out.strip().splitlines()
    return json.loads(out[-1])


def expected_view(adapter, png) -> tuple[int, np.ndarray]:
    """What step2 would feed: image-token ids in input_ids and the adapter's tile boxes."""
    inputs = adapter.image_inputs([Image.open(png)], "What is the pass key?")
    return int((inputs.input_ids == adapter.image_token_id).sum()), inputs.image_tokens[0].tile_boxes


@pytest.mark.parametrize("protocol", ["paper", "native"])
def test_inspect_json_matches_the_adapter_on_a_hub_config(hub_dir, page_png, capsys, protocol):
    assert inspect.main(["--model_id", str(hub_dir), "--image", str(page_png), "--protocol", protocol, "--json"]) == 0
    result = last_json(capsys)
    assert sorted(result) == ["image_tokens", "protocol", "tiles"] and result["protocol"] == protocol
    count, boxes = expected_view(load_adapter(str(hub_dir), protocol=protocol), page_png)  # with weights
    assert result["image_tokens"] == count == {"paper": 13 * 18, "native": 17 * 23}[protocol]
    np.testing.assert_array_equal(np.array(result["tiles"]), boxes)


def test_inspect_overrides_and_internvl(hub_dir, internvl_dir, page_png, capsys):
    argv = ["--image", str(page_png), "--json"]
    assert inspect.main(["--model_id", str(hub_dir), "--min_pixels", "3136", "--max_pixels", "100352", *argv]) == 0
    assert last_json(capsys)["image_tokens"] == 9 * 12
    assert inspect.main(["--model_id", str(internvl_dir), *argv]) == 0
    result = last_json(capsys)
    adapter = load_adapter(str(internvl_dir))
    count, boxes = expected_view(adapter, page_png)
    assert result["image_tokens"] == count == 256
    np.testing.assert_array_equal(np.array(result["tiles"]), boxes)
    assert inspect.main(["--model_id", str(internvl_dir), "--protocol", "native", *argv]) == 0
    assert last_json(capsys)["image_tokens"] == 13 * 256  # 4 x 3 tiles + thumbnail (published max_patches 12)


def test_inspect_overlay_draws_the_token_grid(hub_dir, page_png, tmp_path, capsys):
    out = tmp_path / "overlay.png"
    assert inspect.main(["--model_id", str(hub_dir), "--image", str(page_png), "--overlay", str(out)]) == 0
    text = capsys.readouterr().out
    assert "image tokens: 234" in text and "13 x 18 tokens" in text
    overlay = np.asarray(Image.open(out).convert("RGB"))
    assert overlay.shape == (482, 635, 3)
    red = tuple(inspect.OVERLAY_COLOUR)
    # Tiles are 635/18 = 35.28 px wide, 482/13 = 37.08 px high: grid lines at their edges, white inside.
    assert tuple(overlay[100, 0]) == red and tuple(overlay[0, 300]) == red
    assert tuple(overlay[100, 35]) == red and tuple(overlay[37, 300]) == red
    assert tuple(overlay[18, 17]) == (255, 255, 255)


def test_inspect_cli_errors_and_module_entry(hub_dir, page_png, tmp_path, capsys):
    assert inspect.main(["--model_id", str(hub_dir), "--image", str(tmp_path / "nope.png")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: no image at {tmp_path / 'nope.png'}"]
    assert inspect.main(["--model_id", str(hub_dir), "--image", str(page_png), "--max_pixels", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --max_pixels must be positive, got 0"
    ok = subprocess.run([sys.executable, "-m", "ocr_heads.inspect", "--model_id", str(hub_dir), "--image",
                         str(page_png), "--json"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout.strip().splitlines()[-1])["image_tokens"] == 234


def rows(out: str) -> dict[str, str]:
    """check name -> status, from the doctor's table."""
    table = {}
    for line in out.splitlines():
        for name in ("token ids", "load", "protocol", "chat template", "passkey", "capture == eager"):
            if line.startswith(name + " "):
                table[name] = line[len(name):].split()[0]
    return table


def test_doctor_passes_on_good_tiny_models(hub_dir, internvl_dir, capsys):
    for model in (hub_dir, internvl_dir):
        assert doctor.main(["--model_id", str(model)]) == 0
        out = capsys.readouterr().out
        table = rows(out)
        assert table == {"token ids": "ok", "load": "ok", "protocol": "ok", "chat template": "ok",
                         "passkey": table["passkey"], "capture == eager": "ok"}, out
        # A random model cannot read: reported, not failed.
        assert table["passkey"] in ("ok", "warn") and "doctor: all checks passed" in out
        assert "tokens per page [" in out


def test_doctor_fails_when_config_and_tokenizer_disagree(tiny_model_dir, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    config = json.loads((broken / "config.json").read_text())
    config["image_token_id"] = config["video_token_id"]  # points at <|video_pad|> in the tokenizer
    (broken / "config.json").write_text(json.dumps(config))
    assert doctor.main(["--model_id", str(broken)]) == 1
    out = capsys.readouterr().out
    table = rows(out)
    assert table["token ids"] == "FAIL" and table["load"] == "FAIL" and table["capture == eager"] == "skip"
    assert "image_token_id=" in out and "doctor: 2 failed: token ids, load" in out


def test_doctor_fails_when_the_processor_ignores_the_settings(hub_dir, capsys, monkeypatch):
    """The protocol row compares the processor's tokens per page with what the settings predict."""
    from transformers import AutoImageProcessor

    import ocr_heads.models.qwen2_vl as qwen2_vl

    original = qwen2_vl.Qwen2VLAdapter.__init__

    def init_then_revert_to_hub_bounds(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.image_processor = AutoImageProcessor.from_pretrained(str(hub_dir))  # 3136 .. 12845056 px

    monkeypatch.setattr(qwen2_vl.Qwen2VLAdapter, "__init__", init_then_revert_to_hub_bounds)
    assert doctor.main(["--model_id", str(hub_dir)]) == 1
    out = capsys.readouterr().out
    assert rows(out)["protocol"] == "FAIL" and "tokens per page [391, 391]" in out
    assert "the settings predict [234, 234]" in out
