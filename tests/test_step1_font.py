"""step1 --font: another page font (the authors' Arial metrics through Liberation Sans), recorded in step1.json;
the default pages stay DejaVu Sans Mono."""

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import ImageFont

from ocr_heads.data.fonts import DEFAULT_FONT, resolve_font
from ocr_heads.data.render import PageLayout, PageStyle
from ocr_heads.data.samples import load_samples
from ocr_heads.pipeline.step1 import main as step1_main
from ocr_heads.toy.data import TileStyle

LIBERATION = Path("/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf")
needs_liberation = pytest.mark.skipif(not LIBERATION.is_file(),
                                      reason="fonts-liberation is not installed (apt-get install fonts-liberation)")
ARGS = ["--n", "1", "--lengths", "200"]


def step1(out: Path, *extra: str, task: str = "passkey") -> int:
    return step1_main(task, argv=["--out", str(out), *ARGS, *extra])


def test_the_default_is_dejavu_sans_mono_and_records_no_font(tmp_path):
    text = "The pass key is 48213. Remember it."
    default, explicit = PageLayout(text), PageLayout(text, PageStyle(font_path=DEFAULT_FONT))
    assert default.render_page(0).tobytes() == explicit.render_page(0).tobytes()
    assert Path(PageStyle().font.path).name == "DejaVuSansMono.ttf"
    assert Path(TileStyle().font.path) == DEFAULT_FONT  # the toy's tiles are drawn as before
    assert step1(tmp_path / "d") == 0
    assert json.loads((tmp_path / "d" / "step1.json").read_text()) == {
        "task": "passkey", "seed": 42, "source": "embedded", "digits": 5, "single_char": False}


@needs_liberation
def test_font_path_is_recorded_and_boxes_follow_its_glyphs(tmp_path):
    out = tmp_path / "arial"
    assert step1(out, "--font", str(LIBERATION)) == 0
    recorded = json.loads((out / "step1.json").read_text())
    assert recorded["font"] == "LiberationSans-Regular.ttf"
    assert recorded["font_sha256"] == hashlib.sha256(LIBERATION.read_bytes()).hexdigest()
    sample = load_samples(out)[0]
    assert step1(tmp_path / "mono") == 0
    mono = load_samples(tmp_path / "mono")[0]
    assert sample.answer == mono.answer and sample.context == mono.context  # same text, other glyphs
    font = ImageFont.truetype(str(LIBERATION), 20)
    (page, boxes), = sample.evidence.items()
    (_, mono_boxes), = mono.evidence.items()
    assert boxes != mono_boxes
    pixels = np.asarray(sample.load_pages()[int(page)].convert("L"))
    for char, (x0, y0, x1, y1) in zip(sample.answer, boxes, strict=True):
        assert x1 - x0 == pytest.approx(font.getlength(char), abs=1)  # its own advance (rounded), not a mono cell
        assert pixels[int(y0):int(np.ceil(y1)), int(x0):int(np.ceil(x1))].min() < 128  # the digit's ink is inside


@needs_liberation
@pytest.mark.skipif(shutil.which("fc-match") is None, reason="no fontconfig here")
def test_a_family_name_resolves_to_its_file_and_a_substitute_is_refused():
    assert resolve_font("Liberation Sans") == LIBERATION
    alias = subprocess.run(["fc-match", "--format=%{family}", "Arial"], capture_output=True, text=True).stdout
    if "Arial" not in alias:  # fontconfig would substitute another family for Arial: not taken silently
        with pytest.raises(Exception, match="no installed font of that family"):
            resolve_font("Arial")


@needs_liberation
def test_a_rerun_with_another_font_is_refused(tmp_path, capsys):
    out = tmp_path / "data"
    assert step1(out, "--font", str(LIBERATION)) == 0
    assert step1(out, "--font", str(LIBERATION), "--n", "2") == 0  # same font: resumes
    capsys.readouterr()
    for other in ([], ["--font", str(DEFAULT_FONT)]):
        assert step1(out, *other) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and "font=" in err[0]
    assert step1(tmp_path / "niah", "--font", str(LIBERATION), task="niah") == 0
    assert json.loads((tmp_path / "niah" / "step1.json").read_text())["font"] == LIBERATION.name


@pytest.mark.parametrize("font", ["README.md", "missing.ttf", "No Such Family Anywhere"])
def test_a_font_that_is_not_one_is_one_error_line(tmp_path, capsys, font):
    if font == "README.md":
        font = str(Path(__file__).resolve().parents[1] / "README.md")  # a file, but not TrueType/OpenType
    assert step1(tmp_path / "x", "--font", font) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --font")
    assert not (tmp_path / "x" / "step1.json").exists()


def test_an_unreadable_font_with_a_font_signature_is_one_error_line(tmp_path, capsys):
    broken = tmp_path / "broken.ttf"
    broken.write_bytes(b"\x00\x01\x00\x00" + bytes(60))
    assert step1(tmp_path / "x", "--font", str(broken)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --font") and "FreeType" in err[0]
    assert not (tmp_path / "x" / "step1.json").exists()
