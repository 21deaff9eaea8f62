"""The page at `/` in a real browser (Debian's Chromium, headless, driven by Playwright) against the
service on the committed models: classify a generated image, show an API error, work by keyboard and on
a narrow screen. Screenshots go to out/screenshots/."""

from __future__ import annotations

import io
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import uvicorn
from PIL import Image

from app.core.settings import Settings
from app.http.application import create_app

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "out" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
REDOC_BADGE = "https://cdn.redoc.ly/redoc/logo-mini.svg"
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    app = create_app(Settings(model_dir=ROOT / "models"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 300
    while not (server.started and app.state.service.loaded.is_set()):
        assert time.monotonic() < deadline, "service did not start"
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(30)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium not found at {CHROMIUM} (make system-deps installs Debian's chromium)")
    playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


def _png(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (120, 90), color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_page_classifies_an_image_and_shows_errors(browser, base_url: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.goto(base_url)
    page.wait_for_selector("#task option", state="attached")
    tasks = page.eval_on_selector_all("#task option", "options => options.map(o => o.value)")
    task = "flowers" if "flowers" in tasks else tasks[0]
    page.select_option("#task", task)
    labels = page.evaluate(f"fetch('models/{task}').then(r => r.json()).then(m => m.labels)")
    info = page.inner_text("#model-info")
    assert "version" in info and "test accuracy" in info

    page.set_input_files(
        "#files", files=[{"name": "yellow.png", "mimeType": "image/png", "buffer": _png((230, 200, 30))}]
    )
    page.wait_for_selector(".card .bar")
    shown = page.eval_on_selector_all(".card .bar .label", "nodes => nodes.map(n => n.textContent)")
    percents = page.eval_on_selector_all(".card .bar .pct", "nodes => nodes.map(n => n.textContent)")
    assert shown and set(shown) <= set(labels), (shown, labels)
    assert all(p.endswith("%") for p in percents)
    assert page.inner_text(".card h2") == "yellow.png"
    page.screenshot(path=str(SCREENSHOTS / "web_prediction.png"), full_page=True)

    page.set_input_files("#files", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not an image"}])
    page.wait_for_function("document.getElementById('error').textContent.length > 0")
    error = page.inner_text("#error")
    assert "not a supported image" in error and "notes.txt" in error
    assert page.query_selector(".card") is None
    page.screenshot(path=str(SCREENSHOTS / "web_error.png"), full_page=True)
    print(f"screenshots: {SCREENSHOTS / 'web_prediction.png'}, {SCREENSHOTS / 'web_error.png'}")
    page.close()


def test_page_shows_the_prediction_set_at_the_coverage_picked(browser, base_url: str) -> None:
    """The coverage menu lists what the model recorded; a photo classified with one shows its set, whose labels
    are the API's for the same photo."""
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.goto(base_url)
    page.wait_for_selector("#task option", state="attached")
    page.select_option("#task", "flowers")
    page.wait_for_function("document.querySelectorAll('#coverage option').length > 1")
    offered = page.eval_on_selector_all("#coverage option", "nodes => nodes.map(n => n.value)")
    assert offered == ["", "0.8", "0.9", "0.95", "0.99"]
    page.select_option("#coverage", "0.95")
    photo = (ROOT / "docs" / "examples" / "sunflower.jpg").read_bytes()
    page.set_input_files("#files", files=[{"name": "sunflower.jpg", "mimeType": "image/jpeg", "buffer": photo}])
    page.wait_for_selector(".card .set")
    shown = page.inner_text(".card .set")
    expected = page.evaluate(
        """async (bytes) => {
            const form = new FormData();
            form.append("file", new Blob([new Uint8Array(bytes)], {type: "image/jpeg"}), "sunflower.jpg");
            const answer = await fetch("predict/flowers?coverage=0.95", {method: "POST", body: form});
            return (await answer.json()).predictions[0].prediction_set;
        }""",
        list(photo),
    )
    assert shown == f"With 95% confidence: {' or '.join(expected)}", (shown, expected)
    page.screenshot(path=str(SCREENSHOTS / "web_prediction_set.png"), full_page=True)
    page.close()


def test_page_works_from_the_keyboard_on_a_narrow_screen(browser, base_url: str) -> None:
    page = browser.new_page(viewport={"width": 360, "height": 740})
    page.goto(base_url)
    page.wait_for_selector("#task option", state="attached")
    page.focus("#task")
    page.keyboard.press("Tab")
    if page.is_enabled("#coverage"):  # then the coverage of the prediction sets, chosen with the arrow keys
        assert page.evaluate("document.activeElement.id") == "coverage"
        page.keyboard.press("Tab")
    if page.is_visible("#plots"):  # the model's plots come first, and open from the keyboard too
        assert page.evaluate("document.activeElement.tagName") == "SUMMARY"
        page.keyboard.press("Enter")
        assert page.evaluate("document.getElementById('plots').open") is True
        page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "choose"
    # Record that Enter reaches the file input. Playwright's own file-chooser interception is flaky under
    # headless Chromium, so the native dialog is suppressed and the files are set directly afterwards.
    page.evaluate(
        "document.getElementById('files').addEventListener('click', e => { window.chooserOpened = true; e.preventDefault(); })"
    )
    page.keyboard.press("Enter")
    page.wait_for_function("window.chooserOpened === true", timeout=5000)
    page.set_input_files("#files", files=[{"name": "dark.png", "mimeType": "image/png", "buffer": _png((20, 20, 20))}])
    page.wait_for_selector(".card .bar")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 360, f"the page scrolls sideways on a narrow screen ({width}px)"
    page.screenshot(path=str(SCREENSHOTS / "web_narrow.png"), full_page=True)
    page.close()


def test_page_flags_an_image_unlike_the_training_data_and_shows_the_plots(browser, base_url: str) -> None:
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.goto(base_url)
    page.wait_for_selector("#task option", state="attached")
    page.select_option("#task", "flowers")
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (160, 200, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    noise.save(buffer, format="PNG")
    page.set_input_files("#files", files=[{"name": "noise.png", "mimeType": "image/png", "buffer": buffer.getvalue()}])
    page.wait_for_selector(".card .bar")
    warning = page.inner_text(".card .ood")
    assert warning.startswith("This does not look like a daisy, dandelion, rose, sunflower or tulip")
    assert page.eval_on_selector(".card", "card => card.classList.contains('flagged')")
    assert page.query_selector_all(".card .bar"), "the bars are still shown, muted"
    page.click("#plots summary")
    page.wait_for_function(
        "[...document.querySelectorAll('#plot-list img')].some(i => i.alt.startsWith('Reliability') && i.naturalWidth > 0)"
    )
    captions = page.eval_on_selector_all("#plot-list figcaption", "nodes => nodes.map(n => n.textContent)")
    assert {
        "Training curves",
        "Confusion matrix (test split)",
        "Reliability diagram: confidence against accuracy",
    } <= set(captions)
    page.screenshot(path=str(SCREENSHOTS / "web_flagged.png"), full_page=True)
    page.close()


@pytest.mark.parametrize(
    ("path", "operation", "expected"),
    [("docs", ".opblock-summary-path", "/predict/{task}"), ("redoc", "[data-section-id^='operation']", "Predict")],
)
def test_api_docs_render_with_the_network_blocked(
    browser, base_url: str, path: str, operation: str, expected: str
) -> None:
    """Swagger UI and ReDoc load every asset from the service itself: with all other hosts refused, the
    page still lists the operations (scripts from a CDN would leave it blank, as before). The one request
    allowed out is ReDoc's "API docs by Redocly" badge, hard-coded in its bundle, which hides itself when
    the image cannot load."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1200, "height": 1000})
    refused: list[str] = []

    def only_the_service(route) -> None:
        if route.request.url.startswith(base_url):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort("internetdisconnected")

    context.route("**/*", only_the_service)
    page = context.new_page()
    page.goto(base_url + path)
    page.wait_for_selector(operation, timeout=30_000)
    text = page.inner_text("body")
    assert expected in text
    refused = [url for url in refused if url != REDOC_BADGE]
    assert refused == [], f"the {path} page asked other hosts for {refused}"
    page.screenshot(path=str(SCREENSHOTS / f"{path}-offline.png"))
    context.close()
