"""The HTML report in a real headless browser (Debian's chromium + chromedriver).

On a machine without them the test is skipped, except in CI (CI=true), where
`.ci/run` installs them and a missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import pytest

from simulator.cli import main as cli_main
from simulator.engine.simulation import Config, run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    if os.environ.get("CI") == "true":
        pytest.fail("CI must have chromium and chromedriver (see .ci/run)", pytrace=False)
    pytest.skip(
        "chromium/chromedriver not installed (apt-get install chromium chromium-driver)", allow_module_level=True
    )

webdriver = pytest.importorskip("selenium.webdriver")


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("html")
    log = d / "run.jsonl"
    r = run(Config("teardown-under-load", seed=0, bugs=("no-flush-before-table-free",), log=str(log)))
    assert r.violations
    out = d / "report.html"
    assert cli_main(["inspect", str(log), "--format", "html", "--violation", "1", "-o", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM  # type: ignore[assignment]
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1440,900",
        f"--user-data-dir={tmp_path_factory.mktemp('chrome')}",
    ):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()


def test_the_page_is_self_contained(page: Path) -> None:
    text = page.read_text()
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "") and "https://" not in text
    assert "<script src" not in text and "<link" not in text


def test_lanes_chain_and_hover_in_a_real_browser(page: Path, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    browser.get(page.as_uri())
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert errors == [], errors
    lanes = browser.find_elements(By.CSS_SELECTOR, "g.lane")
    assert [lane.get_attribute("data-hart") for lane in lanes] == ["0", "1", "2", "3", ""]  # 4 harts + driver
    chain = browser.find_elements(By.CSS_SELECTOR, "circle.chain")
    kinds = [c.get_attribute("data-kind") for c in chain]
    assert kinds[0] == "fill" and kinds[-1] == "use" and {"unmap", "free", "reuse"} <= set(kinds)
    stroke = browser.execute_script("return getComputedStyle(arguments[0]).stroke", chain[0])
    assert stroke == "rgb(220, 38, 38)"  # highlighted in red
    assert len(browser.find_elements(By.CSS_SELECTOR, "circle.ev")) > 10
    assert len(browser.find_elements(By.CSS_SELECTOR, "#chain tr")) == len(chain) + 1
    assert "missing or late" in browser.find_element(By.CSS_SELECTOR, ".missing").text
    # hover over the stale use: the tooltip shows its fields
    ActionChains(browser).move_to_element(chain[-1]).perform()
    tip = browser.find_element(By.ID, "tip")
    assert tip.is_displayed() and "kind: use" in tip.text and "stale use" in tip.text
    # the screenshot: a real PNG of the whole window
    shot = tmp_path / "report.png"
    assert browser.save_screenshot(str(shot))
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 1200 and height >= 400 and len(data) > 20_000
