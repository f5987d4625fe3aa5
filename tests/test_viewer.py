"""The viewer's HTML file: what it embeds (pages, the quantised maps, look.json's fields), that it needs no
network, and its command line. The browser test is tests/test_viewer_browser.py."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
from look_fixture import LAYERS, PAGE_SIZES, STEPS, attention, make_look_dir, tiles_and_pages

from ocr_heads.maps import viewer


def embedded_data(html: str) -> dict:
    match = re.search(r'<script type="application/json" id="look-data">(.*?)</script>', html, re.S)
    assert match is not None
    return json.loads(match.group(1))


def test_viewer_embeds_pages_maps_and_the_look_fields(tmp_path):
    out = make_look_dir(tmp_path / "look")
    path = viewer.write_viewer(out)
    assert path == out / "index.html"
    data = embedded_data(path.read_text())
    tiles, pages = tiles_and_pages()
    assert data["tiles"] == tiles and data["pages"] == pages and data["pieces"] == ["4", "8", "2", " end"]
    assert (data["steps"], data["layers"], data["tokens"]) == (STEPS, LAYERS, len(tiles))
    assert data["scores"]["ocr"]["l1_h2"] == 0.9
    for k, uri in enumerate(data["page_images"]):
        assert uri.startswith("data:image/png;base64,")
        assert base64.b64decode(uri.split(",", 1)[1]) == (out / f"page_{k}.png").read_bytes()
    assert len(data["page_images"]) == len(PAGE_SIZES)
    expected = attention().astype(np.float32)
    codes = np.frombuffer(base64.b64decode(data["codes"]), dtype=np.uint8).reshape(expected.shape)
    scales = np.frombuffer(base64.b64decode(data["scales"]), dtype="<f4").reshape(expected.shape[:-1])
    np.testing.assert_allclose(codes * scales[..., None] / 255, expected, atol=1e-6)


def test_quantisation_keeps_each_map_to_half_a_step_of_its_peak():
    rng = np.random.default_rng(0)
    values = rng.dirichlet(np.ones(50), size=(3, 4)).astype(np.float32)
    values[0, 0] = 0.0  # a head with no mass on the image
    codes, scales = viewer.quantise(values)
    assert codes.dtype == np.uint8 and scales.shape == (3, 4) and scales[0, 0] == 0
    decoded = codes * scales[..., None] / 255
    assert np.all(np.abs(decoded - values) <= scales[..., None] / 510 + 1e-7)


def test_viewer_needs_no_network_and_survives_markup_in_the_question(tmp_path):
    out = make_look_dir(tmp_path / "look", question='</script><script>alert("x")</script> <img src=x>')
    html = viewer.write_viewer(out).read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", html, re.I)
    assert "<link" not in html and "@import" not in html
    assert html.count("</script>") == 2  # the data block and the page script, nothing injected
    assert embedded_data(html)["question"].startswith("</script>")


def test_shape_that_disagrees_with_look_json_is_refused(tmp_path):
    out = make_look_dir(tmp_path / "look")
    look = json.loads((out / "look.json").read_text())
    look["pieces"] = look["pieces"][:2]
    (out / "look.json").write_text(json.dumps(look))
    with pytest.raises(ValueError, match="has shape"):
        viewer.write_viewer(out)
    assert not (out / "index.html").exists()


def test_command_rewrites_the_viewer(tmp_path, capsys):
    out = make_look_dir(tmp_path / "look")
    assert viewer.main([str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out / "index.html")
    assert (out / "index.html").stat().st_size > 0


def test_command_on_a_folder_without_a_look_is_one_error_line(tmp_path, capsys):
    assert viewer.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "look.json" in err[0]
