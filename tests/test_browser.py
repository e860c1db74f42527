"""The page in a real browser: headless Chromium from Debian, driven by Playwright, against
`digitlab serve` running as a process with the bundled model.

Screenshots are kept in artifacts/browser/ (next to tests/) for people to look at.
Without Chromium this module is skipped -- except under CI, where that is a failure.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from servicetools import free_port, start_service, stop_service

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "browser"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    message = "Chromium is not installed (Debian: apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def server():
    port = free_port()
    process = start_service(port)
    yield f"http://127.0.0.1:{port}"
    stop_service(process)


@pytest.fixture(scope="module")
def browser():
    executable = chromium_path()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1000, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    # (the browser logs every 4xx answer; the page shows those to the user itself)
    page.on(
        "console",
        lambda msg: (
            errors.append(msg.text)
            if msg.type == "error"
            and not msg.text.startswith("Failed to load resource: the server responded with a status of 4")
            else None
        ),
    )
    requests_outside: list[str] = []
    page.on("request", lambda r: requests_outside.append(r.url) if not r.url.startswith((server, "data:")) else None)
    page.goto(server + "/")
    page.wait_for_function("document.getElementById('model-info').textContent.includes('digitnet-pen')")
    yield page
    assert errors == [], errors
    assert requests_outside == [], f"the page fetched from elsewhere: {requests_outside}"
    context.close()


def stroke(page, points: list[tuple[float, float]]) -> None:
    """One mouse stroke through points given in the pad's own 280x280 pixels."""
    box = page.locator("#pad").bounding_box()
    scale = box["width"] / 280

    def at(p):
        return box["x"] + p[0] * scale, box["y"] + p[1] * scale

    page.mouse.move(*at(points[0]))
    page.mouse.down()
    for a, b in zip(points, points[1:]):
        steps = max(2, int(math.dist(a, b) / 6))
        page.mouse.move(*at(b), steps=steps)
    page.mouse.up()


DRAWINGS = {
    "1": [[(150, 40), (140, 240)]],
    "7": [[(70, 50), (210, 50), (130, 240)]],
    "0": [[(140 + 60 * math.sin(t / 24 * 2 * math.pi), 140 - 95 * math.cos(t / 24 * 2 * math.pi)) for t in range(25)]],
    "4": [[(110, 40), (70, 160), (200, 160)], [(170, 80), (165, 245)]],
}


@pytest.mark.parametrize("digit", list(DRAWINGS))
def test_drawing_a_digit_shows_its_prediction_bar_and_input(page, digit):
    for points in DRAWINGS[digit]:
        stroke(page, points)
    page.wait_for_function(f"document.getElementById('digit').textContent === '{digit}'", timeout=15000)
    top = page.locator("#bars li.top")
    assert top.count() == 1 and top.get_attribute("data-digit") == digit
    assert float(top.locator(".fill").evaluate("e => parseFloat(e.style.width)")) > 50
    # the 28x28 image the model saw is drawn: it has ink
    ink = page.evaluate("""() => { const c = document.getElementById('seen').getContext('2d');
        const d = c.getImageData(0, 0, 28, 28).data; let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i];
        return s; }""")
    assert ink > 0
    page.wait_for_timeout(300)  # the bars' short transition, for the screenshot
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"draw-{digit}.png"), full_page=True)


def test_undo_and_clear(page):
    stroke(page, DRAWINGS["7"][0])
    page.wait_for_function("document.getElementById('digit').textContent === '7'", timeout=15000)
    stroke(page, [(60, 250), (220, 250)])  # a stray underline
    page.click("#undo")
    page.wait_for_function("document.getElementById('digit').textContent === '7'", timeout=15000)
    page.focus("#pad")
    page.keyboard.press("Escape")  # the pad's keyboard shortcut for Clear
    page.wait_for_function("document.getElementById('digit').textContent === '–'")
    assert page.locator("#bars li.top").count() == 0


def test_dropping_a_photo_shows_the_annotated_reading(page, shared_data_dir):
    photo = shared_data_dir / "real-digits" / "photos" / "vinay0410_numbers.jpg"
    page.set_input_files("#file", str(photo))
    page.wait_for_selector("#annotated:not([hidden])", timeout=30000)
    assert page.locator("#photo-text").text_content() == "13540"
    assert page.evaluate("document.getElementById('annotated').naturalWidth") > 0
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "photo.png"), full_page=True)


def test_a_bad_file_shows_the_error(page, tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("#photo-status.error", timeout=15000)
    assert "not an image" in page.locator("#photo-status").text_content()


def test_fits_a_phone_and_controls_are_labelled(browser, server):
    context = browser.new_context(viewport={"width": 375, "height": 667}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.goto(server + "/")
    page.wait_for_function("document.getElementById('model-info').textContent.includes('digitnet-pen')")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375  # no sideways scrolling
    pad = page.locator("#pad").bounding_box()
    assert pad["width"] >= 250
    for selector in ("#pad", "#undo", "#clear", "#file"):
        name = page.locator(selector).evaluate(
            "e => e.getAttribute('aria-label') || e.textContent.trim() || (e.labels && e.labels[0] && "
            "e.labels[0].textContent.trim())"
        )
        assert name, selector
    # the controls are reached from the keyboard, in order
    page.focus("#pad")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "undo"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "clear"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "phone.png"), full_page=True)
    context.close()
