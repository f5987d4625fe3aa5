"""The viewer in a real browser: headless Chromium (Debian's ``chromium`` and ``chromium-driver``) driven by
selenium, opening the file from ``file://``. Clicking a token must show that token's map; the head selector
and the hover readout must work. Skips, with its reason, only where selenium or the browser is not found
(``.ci/run`` installs the browser, ``make install`` selenium)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from look_fixture import ODD_HEAD, TARGETS, make_look_dir
from PIL import Image

from ocr_heads.maps.viewer import write_viewer

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,1000"]


def find(*names: str) -> str | None:
    return next((found for name in names if (found := shutil.which(name) or (
        name if Path(name).is_file() else None))), None)


@pytest.fixture
def browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (make install adds it)")
    from selenium.webdriver.chrome.service import Service

    binary = find("/usr/bin/chromium", "chromium", "chromium-browser")
    driver_path = find("/usr/bin/chromedriver", "chromedriver")
    if binary is None or driver_path is None:
        pytest.skip("no chromium/chromedriver found (apt-get install chromium chromium-driver; .ci/run does it)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in [*FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def shown_map(driver) -> dict[int, float]:
    pairs = driver.execute_script(
        "return [...document.querySelectorAll('#map rect.tile')].map(r => [r.dataset.i, r.dataset.p]);")
    return {int(i): float(p) for i, p in pairs}


def peak(values: dict[int, float]) -> tuple[int, float]:
    return max(values.items(), key=lambda item: item[1])


def click_token(driver, step: int) -> None:
    driver.find_element("css selector", f'#tokens button[data-step="{step}"]').click()
    assert driver.find_element("id", "map-title").get_attribute("data-step") == str(step)


def test_clicking_a_token_shows_its_map(browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import Select

    path = write_viewer(make_look_dir(tmp_path / "look"))
    browser.get(path.as_uri())
    assert browser.find_element("tag name", "body").get_attribute("data-ready") == "true"
    assert len(browser.find_elements("css selector", "#tokens button[data-step]")) == len(TARGETS)

    click_token(browser, 0)
    first = shown_map(browser)
    assert peak(first) == (TARGETS[0], pytest.approx(5 / 6, abs=1e-3))  # 5 of 6 heads put all their mass there
    click_token(browser, 1)
    second = shown_map(browser)
    assert second != first
    assert peak(second) == (TARGETS[1], pytest.approx(5 / 6, abs=1e-3))
    assert browser.find_element("id", "scale-max").text == "0.8333"

    Select(browser.find_element("id", "mode")).select_by_value("head")
    Select(browser.find_element("id", "head-name")).select_by_value(f"l{ODD_HEAD[0]}_h{ODD_HEAD[1]}")
    assert peak(shown_map(browser)) == (TARGETS[1] + 1, 1.0)
    Select(browser.find_element("id", "mode")).select_by_value("top")  # N = 10: all 3 "ocr" heads, 2 on the target
    assert peak(shown_map(browser)) == (TARGETS[1], pytest.approx(2 / 3, abs=1e-3))
    top_n = browser.find_element("id", "top-n")
    top_n.clear()
    top_n.send_keys("1")
    assert peak(shown_map(browser)) == (TARGETS[1] + 1, 1.0)  # the top-1 "ocr" head is the odd one
    assert browser.find_element("id", "heads-used").text.endswith(f"l{ODD_HEAD[0]}_h{ODD_HEAD[1]}")

    click_token(browser, 3)  # the odd head now looks at the token with no pixels: listed, not painted
    assert max(shown_map(browser).values()) == 0.0
    assert browser.find_element("css selector", "#nulls li[data-i]").get_attribute("data-p") == "1"

    Select(browser.find_element("id", "mode")).select_by_value("all")
    click_token(browser, 0)
    tile = browser.find_element("css selector", f'#map rect.tile[data-i="{TARGETS[0]}"]')
    ActionChains(browser).move_to_element(tile).perform()
    readout = browser.find_element("id", "readout").text
    assert readout == f"image token {TARGETS[0]} · page 0 · box [0, 0, 20, 20] · p = 0.8333"

    shot = tmp_path / "viewer.png"
    browser.save_screenshot(str(shot))
    print(f"screenshot: {shot}")
    with Image.open(shot) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 20, "the screenshot is blank"
