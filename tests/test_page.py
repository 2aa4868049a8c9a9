"""GET / on the built-in app, in a real browser: headless Chromium (Debian's
``chromium`` and ``chromium-driver``, driven by selenium) loads the page
over HTTP/1.1 and over h2 (TLS, the development certificate), draws a
stroke, submits, and finds the prediction, the protocol and the timings.
The h2 run takes a screenshot; with RAWSERVE_UPDATE_SCREENSHOT=1 it goes to
docs/img/page.png, the README's picture."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rawserve.core.config import InferenceSettings
from rawserve.inference.app import create_app
from tests.conftest import RunningServer, need, run_server

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT = ROOT / "docs" / "img" / "page.png"
EMPTY = "\u2013"  # what the page shows before it knows a value


@pytest.fixture(scope="module")
def srv() -> Iterator[RunningServer]:
    with run_server(create_app(InferenceSettings(cache_enabled=False))) as s:
        for _ in range(500):
            if httpx.get(f"{s.http_url}/readyz").status_code == 200:
                break
        yield s


def test_the_page_is_one_file_that_fetches_nothing_from_outside(srv: RunningServer) -> None:
    r = httpx.get(f"{srv.http_url}/")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    html = r.text
    # No external scripts, styles, fonts or images: only this server's paths.
    assert not re.search(r"""(src|href)=["'](https?:)?//""", html)
    assert "https://" not in html and "http://" not in html
    assert "<script src" not in html
    assert "/" not in httpx.get(f"{srv.http_url}/openapi.json").json()["paths"]


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or need("chromium")
    driver_path = shutil.which("chromedriver") or need("chromedriver")
    profile = tempfile.mkdtemp(prefix="rawserve-chromium-")
    options = Options()
    options.binary_location = binary
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--ignore-certificate-errors",
        "--window-size=1280,900",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _draw_a_one_and_classify(driver: object, url: str) -> dict[str, str]:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    d: object = driver
    d.get(url)  # type: ignore[attr-defined]
    wait = WebDriverWait(d, 20)
    pad = wait.until(lambda drv: drv.find_element(By.ID, "pad"))
    # A vertical stroke in the middle of the pad: a "1". Offsets are from the centre.
    ActionChains(d).move_to_element_with_offset(pad, 0, -90).click_and_hold().move_by_offset(
        0, 60
    ).move_by_offset(0, 60).move_by_offset(0, 60).release().perform()  # type: ignore[arg-type]
    d.find_element(By.ID, "classify").click()  # type: ignore[attr-defined]
    wait.until(lambda drv: drv.find_element(By.ID, "prediction").text.strip() != "")
    wait.until(lambda drv: drv.find_element(By.ID, "timing").text.strip() not in ("", EMPTY))
    # The live /metrics view fills in on its own.
    wait.until(lambda drv: drv.find_element(By.ID, "m-items").text.strip() not in ("", EMPTY))
    return {
        name: d.find_element(By.ID, name).text  # type: ignore[attr-defined]
        for name in ("prediction", "confidence", "protocol", "timing", "error")
    }


def test_the_page_classifies_a_drawing_over_http11(srv: RunningServer, browser: object) -> None:
    seen = _draw_a_one_and_classify(browser, f"{srv.http_url}/")
    assert seen["error"] == ""
    assert seen["prediction"] == "1"
    assert seen["protocol"].startswith("HTTP/1.1")
    assert "queue" in seen["timing"] and "infer" in seen["timing"]


def test_the_page_classifies_a_drawing_over_h2(
    srv: RunningServer, browser: object, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    url = f"https://localhost:{srv.https_port}/"
    seen = _draw_a_one_and_classify(browser, url)
    assert seen["error"] == ""
    assert seen["prediction"] == "1"
    assert seen["protocol"].startswith("HTTP/2")
    # The priority chooser, then the load button: the burst is answered.
    d: object = browser
    Select(d.find_element(By.ID, "priority")).select_by_value("0")  # type: ignore[attr-defined]
    d.find_element(By.ID, "load").click()  # type: ignore[attr-defined]
    WebDriverWait(d, 60).until(
        lambda drv: drv.find_element(By.ID, "loadstate").text.startswith("400 / 400")
    )
    d.find_element(By.ID, "classify").click()  # type: ignore[attr-defined]
    WebDriverWait(d, 20).until(lambda drv: drv.find_element(By.ID, "prediction").text == "1")
    target = SCREENSHOT if os.environ.get("RAWSERVE_UPDATE_SCREENSHOT") else tmp_path / "page.png"
    d.save_screenshot(str(target))  # type: ignore[attr-defined]
    assert target.stat().st_size > 10_000
