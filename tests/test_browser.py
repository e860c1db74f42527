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

import cv2
import numpy as np
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
    page.wait_for_function("document.getElementById('model-info').textContent.includes('digitnet-real')")
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


BAR_TOLERANCE = 0.015  # of the track's width: a bar's rendered fill against its probability

# Each bar as rendered: its probability (data-probability, from the answer), the fill's and the
# track's widths in CSS pixels, and the value printed beside it.
RENDERED_BARS = """() => Array.from(document.querySelectorAll('#bars li'), (li) => ({
    p: li.dataset.probability === undefined ? null : Number(li.dataset.probability),
    fill: li.querySelector('.fill').getBoundingClientRect().width,
    track: li.querySelector('.track').getBoundingClientRect().width,
    value: li.querySelector('.value').textContent }))"""


def settled_bars(page) -> list[dict]:
    """The bars once their widths have reached their probabilities (they move in a short transition);
    a fill that never does (the inline <span> whose width stayed 0 px) fails here."""
    page.wait_for_function(
        f"(bars => bars.every(b => b.p !== null && Math.abs(b.fill / b.track - b.p) <= {BAR_TOLERANCE}))"
        f"(({RENDERED_BARS})())",
        timeout=5000,
    )
    return page.evaluate(RENDERED_BARS)


@pytest.mark.parametrize("digit", list(DRAWINGS))
def test_drawing_a_digit_shows_its_prediction_bar_and_input(page, digit):
    for points in DRAWINGS[digit]:
        stroke(page, points)
    page.wait_for_function(f"document.getElementById('digit').textContent === '{digit}'", timeout=15000)
    top = page.locator("#bars li.top")
    assert top.count() == 1 and top.get_attribute("data-digit") == digit
    # The bars, measured as drawn, against the probabilities the service gives for this very canvas
    answer = page.evaluate("""async () => (await fetch('api/predict', {method: 'POST',
        headers: {'Content-Type': 'application/json'},
        body: JSON.stringify({image: document.getElementById('pad').toDataURL('image/png')})})).json()""")
    bars = settled_bars(page)
    assert [b["p"] for b in bars] == pytest.approx(answer["probabilities"], abs=1e-6)
    for d, bar in enumerate(bars):
        assert bar["track"] > 100, bar  # a bar to read, not a sliver
        assert abs(bar["fill"] / bar["track"] - bar["p"]) <= BAR_TOLERANCE, (d, bar)
        assert bar["value"] == f"{bar['p'] * 100:.1f}%", (d, bar)
    assert bars[int(digit)]["fill"] > 0.5 * bars[int(digit)]["track"]  # the answer's bar is visibly long
    # the 28x28 image the model saw is drawn: it has ink
    ink = page.evaluate("""() => { const c = document.getElementById('seen').getContext('2d');
        const d = c.getImageData(0, 0, 28, 28).data; let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i];
        return s; }""")
    assert ink > 0
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"draw-{digit}.png"), full_page=True)


def assert_empty_state(page) -> None:
    """Before any reading: the placeholder says what to do; no digit, no dash, no black 28x28 square."""
    placeholder = page.locator("#placeholder")
    assert placeholder.is_visible() and "Draw a digit" in placeholder.text_content()
    assert not page.locator("#seen").is_visible()
    assert not page.locator("#result .answer").is_visible()
    assert "–" not in page.locator("#result").inner_text()
    assert page.locator("#bars .value").all_text_contents() == [""] * 10
    assert page.locator("#bars li.top").count() == 0
    page.wait_for_function(f"({RENDERED_BARS})().every(b => b.fill === 0 && b.p === null)", timeout=2000)


def test_the_empty_page_shows_a_calm_placeholder(page):
    assert_empty_state(page)
    assert not page.locator("#photo-result").is_visible()  # no bare "Text:" before a photo is read
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "empty.png"), full_page=True)
    stroke(page, DRAWINGS["1"][0])
    page.wait_for_function("document.getElementById('digit').textContent === '1'", timeout=15000)
    assert not page.locator("#placeholder").is_visible()
    assert page.locator("#seen").is_visible() and page.locator("#result .answer").is_visible()


def test_undo_and_clear(page):
    stroke(page, DRAWINGS["7"][0])
    page.wait_for_function("document.getElementById('digit').textContent === '7'", timeout=15000)
    stroke(page, [(60, 250), (220, 250)])  # a stray underline
    page.click("#undo")
    page.wait_for_function("document.getElementById('digit').textContent === '7'", timeout=15000)
    page.focus("#pad")
    page.keyboard.press("Escape")  # the pad's keyboard shortcut for Clear
    page.wait_for_selector("#result.empty #placeholder", state="visible")
    assert_empty_state(page)
    page.wait_for_timeout(200)  # a prediction still in flight when Clear was pressed changes nothing
    assert_empty_state(page)


def read_on_the_page(page, photo: Path) -> dict:
    """Drop `photo` on the page; once the page shows its reading, the service's reading of it, asked
    for again (the same photo reads the same; the browser drops the page's own large answer, with its
    annotated image, from what Playwright can read back)."""
    page.set_input_files("#file", str(photo))
    page.wait_for_selector("#annotated:not([hidden])", timeout=30000)
    answer = page.request.post(page.url + "api/read", data=photo.read_bytes(), headers={"Content-Type": "image/png"})
    assert answer.ok, answer.text()
    return answer.json()


def shown_digits(page) -> list[dict]:
    """Each digit as the page shows it: its reading, its note (confidence), whether it is marked
    unsure, and the colours it is drawn in."""
    return page.evaluate("""() => Array.from(document.querySelectorAll('#photo-lines .chip'), (chip) => ({
        text: chip.querySelector('b').textContent, note: chip.querySelector('small').textContent,
        unsure: chip.classList.contains('unsure'), colour: getComputedStyle(chip.querySelector('b')).color,
        ground: getComputedStyle(chip).backgroundColor }))""")


def expected_note(digit: dict) -> str:
    """What a digit's chip says under it: its confidence, floored to a whole percent; an unsure one
    its best guess."""
    if digit["text"] == "?":
        guess, p = digit["candidates"][0]
        return f"{guess}? {math.floor(p * 100)}%"
    return f"{math.floor(digit['confidence'] * 100)}%"


def test_dropping_a_photo_shows_the_annotated_reading_and_each_confidence(page, shared_data_dir):
    photo = shared_data_dir / "real-digits" / "photos" / "vinay0410_numbers.jpg"
    reading = read_on_the_page(page, photo)
    assert page.locator("#photo-text").text_content() == reading["text"] == "13540"
    assert page.evaluate("document.getElementById('annotated').naturalWidth") > 0
    digits = [d for line in reading["lines"] for d in line["digits"]]
    shown = shown_digits(page)
    assert [s["text"] for s in shown] == [d["text"] for d in digits]
    assert [s["note"] for s in shown] == [expected_note(d) for d in digits]
    assert not any(s["unsure"] for s in shown)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "photo.png"), full_page=True)


def strokes_page(path: Path) -> Path:
    """A photo-like PNG of three pen-drawn marks: a 1, a shape halfway between a 5 and a 9 (the
    bundled model: '5' at 50%, '9' at 41%, so read as '?'), and a 7."""
    marks = [
        [[(40, 0), (40, 120)]],
        [[(60, 0), (5, 0), (0, 60), (70, 60)], [(60, 54), (60, 120)]],
        [[(0, 0), (70, 0), (25, 120)]],
    ]
    image = np.full((200, 100 + 110 * len(marks), 3), 245, np.uint8)
    for k, mark in enumerate(marks):
        for points in mark:
            line = np.array([(60 + 110 * k + x, 40 + y) for x, y in points], np.int32)
            cv2.polylines(image, [line], False, (30, 30, 30), 9, cv2.LINE_AA)
    cv2.imwrite(str(path), image)
    return path


def test_unsure_digits_stand_out(page, tmp_path):
    reading = read_on_the_page(page, strokes_page(tmp_path / "unsure.png"))
    digits = [d for line in reading["lines"] for d in line["digits"]]
    assert [d["text"] for d in digits] == ["1", "?", "7"], digits  # the test's premise: one digit unsure
    shown = shown_digits(page)
    assert [s["text"] for s in shown] == ["1", "?", "7"]
    assert [s["note"] for s in shown] == [expected_note(d) for d in digits]
    assert [s["unsure"] for s in shown] == [False, True, False]
    sure, unsure = shown[0], shown[1]
    assert unsure["colour"] != sure["colour"] and unsure["ground"] != sure["ground"]  # amber, not ink on grey
    assert unsure["colour"] == "rgb(154, 103, 0)"
    # in the text too, the ? is marked, and the status line says how many are unsure
    marked = page.locator("#photo-text .unsure")
    assert marked.count() == 1 and marked.text_content() == "?"
    assert marked.evaluate("e => getComputedStyle(e).color") == "rgb(154, 103, 0)"
    assert "1 unsure" in page.locator("#photo-status").text_content()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "photo-unsure.png"), full_page=True)


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
    page.wait_for_function("document.getElementById('model-info').textContent.includes('digitnet-real')")
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


def offline_page(browser, server: str):
    """A page in a context where every request not to the service is aborted: a machine with no
    network (the docs' scripts from a CDN left /docs blank there). Its list of blocked URLs too."""
    context = browser.new_context(viewport={"width": 1000, "height": 900})
    blocked: list[str] = []

    def only_the_service(route):
        url = route.request.url
        if url.startswith((server + "/", "data:", "blob:")):
            route.continue_()
        else:
            blocked.append(url)
            route.abort()

    context.route("**/*", only_the_service)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    return context, page, blocked, errors


def test_docs_render_with_no_network(browser, server):
    context, page, blocked, errors = offline_page(browser, server)
    page.goto(server + "/docs")
    page.wait_for_selector(".opblock [data-path]", timeout=20000)
    paths = {e.get_attribute("data-path") for e in page.locator(".opblock [data-path]").all()}
    assert {"/api/predict", "/api/read", "/api/models", "/healthz"} <= paths, paths
    assert page.get_by_text("Read the digit strings in a photo").first.is_visible()
    page.locator(".opblock-summary:has([data-path='/api/read'])").click()
    page.wait_for_selector("text=Each digit and line comes with its box", timeout=10000)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "docs.png"))
    page.goto(server + "/redoc")
    page.get_by_text("Read the digit strings in a photo").first.wait_for(timeout=20000)
    page.screenshot(path=str(ARTIFACTS / "redoc.png"))
    assert blocked == [], f"the docs fetched from elsewhere: {blocked}"
    assert errors == [], errors
    context.close()
