"""The web page in a real browser (Debian's chromium through Playwright) against the real
server with the shipped models: the models table, an uploaded and a drawn image with their
classes and the contribution overlay, a typed and an example molecule with the prediction and
coloured atoms, an error as the server words it, and the API key prompt. No page may break
its Content-Security-Policy or throw.

The browser missing or failing to start skips these tests, and fails them in CI (``CI=true``),
where scripts/test.sh installs it (scripts/install-browser.sh).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.app.browser import (
    ANSWER_TIMEOUT_MS,
    ARROW_192,
    ARROW_AND_CIRCLE,
    ARROW_IMAGE,
    CHROMIUM,
    SHIPPED_MODELS,
    coloured_pixels,
    draw_on_sketch,
    launch_chromium,
    open_page,
    predict_smiles,
    running_server,
    upload_image,
    wait_for_image_answer,
)
from tests.app.model_repo import make_repository
from tests.deploy.tools import in_ci

KEY = "s3cret"


def _unavailable(why: str) -> None:
    message = f"the browser tests cannot run: {why} (scripts/install-browser.sh installs chromium)"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        _unavailable("the Python package playwright is not installed (dev extra)")
    if not CHROMIUM.is_file():
        _unavailable(f"no browser at {CHROMIUM}")
    with sync_playwright() as playwright:
        try:
            chromium = launch_chromium(playwright)
        except Error as exc:
            _unavailable(f"chromium did not start: {str(exc).splitlines()[0]}")
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with running_server(SHIPPED_MODELS, PLSTM_WARMUP="false") as base:  # ready in seconds
        yield base


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    repo = make_repository(tmp_path_factory.mktemp("model_repository"))
    with running_server(repo, PLSTM_API_KEY=KEY, PLSTM_WARMUP="false") as base:
        yield base


class _Problems(list):
    """Uncaught page errors and Content-Security-Policy refusals of one page."""

    def watch(self, page: Any) -> None:
        page.on("pageerror", lambda error: self.append(f"page error: {error}"))
        page.on("console", self._console)

    def _console(self, message: Any) -> None:
        if "Content Security Policy" in message.text or "Refused to" in message.text:
            self.append(f"console: {message.text}")


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    tab = context.new_page()
    tab.set_default_timeout(ANSWER_TIMEOUT_MS)
    problems = _Problems()
    problems.watch(tab)
    yield tab
    context.close()
    assert problems == []


def _texts(page: Any, selector: str) -> list[str]:
    return [t.strip() for t in page.locator(selector).all_inner_texts()]


def test_the_models_table_shows_state_version_labels_and_metrics(page: Any, server: str) -> None:
    open_page(page, server)
    rows = {r.get_attribute("data-model"): r for r in page.locator("#models-table tbody tr").all()}
    assert sorted(rows) == ["arrow-pointing", "solubility"]
    arrow = rows["arrow-pointing"].inner_text()
    assert "ready" in arrow and "plstm_vis_t" in arrow and "not_pointing, pointing" in arrow
    assert "test: accuracy 0.991" in arrow and "extrapolation: accuracy 0.904" in arrow
    solubility = rows["solubility"].inner_text()
    assert "low, medium, high" in solubility and "test: accuracy 0.786" in solubility


def test_an_uploaded_image_gets_its_classes_and_the_overlay(page: Any, server: str) -> None:
    open_page(page, server)
    upload_image(page, ARROW_IMAGE)
    labels = _texts(page, "#image-predictions .label")
    assert labels == ["pointing", "not_pointing"]
    assert _texts(page, "#image-predictions .value")[0] == "99.91 %"
    timings = page.inner_text("#image-timings")
    assert re.fullmatch(
        r"Server: [\d.]+ ms in all, inference [\d.]+ ms, queue [\d.]+ ms \(path parallel\)",
        timings,
    )
    assert page.get_attribute("#image-view", "data-overlay") == "drawn"
    assert 'to "pointing"' in page.inner_text("#overlay-caption")
    with_overlay = coloured_pixels(page, "#image-view")
    assert with_overlay["red"] > 500 and with_overlay["blue"] > 500
    page.uncheck("#overlay-toggle")
    assert coloured_pixels(page, "#image-view") == {**with_overlay, "red": 0, "blue": 0}


def test_resize_and_explanation_are_chosen_on_the_page(page: Any, server: str) -> None:
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    open_page(page, server)
    page.select_option("#image-resize", "native")
    page.select_option("#image-steps", "8")
    upload_image(page, ARROW_192)
    # 24 x 24 patches x 9 passes is over the explanation limit: the classes still come
    assert _texts(page, "#image-predictions .label")[0] == "not_pointing"
    assert page.inner_text("#explain-error") == (
        "422 image: 576 patches x (steps 8 + 1) exceed the limit of 4096 patches per "
        "explanation: use resize=model or fewer steps"
    )
    assert page.get_attribute("#image-view", "data-overlay") == "none"
    page.select_option("#image-steps", "1")  # a change asks again
    wait_for_image_answer(page)
    assert page.is_hidden("#explain-error")
    assert "(gradient × input)" in page.inner_text("#overlay-caption")
    page.select_option("#image-resize", "model")
    page.select_option("#image-steps", "8")
    wait_for_image_answer(page)
    assert "(integrated gradients, 8 steps)" in page.inner_text("#overlay-caption")
    explain = [url.split("?", 1)[1] for url in requested if "/explain?" in url]
    assert explain[0] == "path=auto&resize=native&steps=8"
    assert explain[-1] == "path=auto&resize=model&steps=8"


def test_a_drawing_is_classified(page: Any, server: str) -> None:
    open_page(page, server)
    draw_on_sketch(page, ARROW_AND_CIRCLE)
    page.click("#sketch-classify")
    wait_for_image_answer(page)
    assert sorted(_texts(page, "#image-predictions .label")) == ["not_pointing", "pointing"]
    assert page.get_attribute("#image-view", "data-overlay") == "drawn"
    pixels = coloured_pixels(page, "#image-view")
    assert pixels["red"] + pixels["blue"] > 0


def test_a_smiles_gets_its_prediction_and_coloured_atoms(page: Any, server: str) -> None:
    open_page(page, server)
    predict_smiles(page, "c1ccccc1O")
    assert _texts(page, "#molecule-predictions .label") == ["high", "medium", "low"]
    assert "inference" in page.inner_text("#molecule-timings")
    assert page.get_attribute("#molecule-drawing", "data-coloured") == "yes"
    atoms = _texts(page, "#atom-list .label")
    assert atoms == ["C0", "C1", "C2", "C3", "C4", "C5", "O6"]
    contributions = [
        float(v)
        for v in page.locator("#atom-list li").evaluate_all(
            "items => items.map(i => i.dataset.contribution)"
        )
    ]
    assert any(c > 0 for c in contributions) and any(c < 0 for c in contributions)
    drawing = coloured_pixels(page, "#molecule-drawing")
    assert drawing["red"] > 100 and drawing["blue"] > 100


def test_an_example_molecule_is_predicted_by_a_click(page: Any, server: str) -> None:
    open_page(page, server)
    page.click("button.example[data-smiles='c1ccc2ccccc2c1']")
    page.wait_for_selector("#molecule-drawing[data-coloured=yes]", state="attached")
    assert page.input_value("#smiles") == "c1ccc2ccccc2c1"
    assert _texts(page, "#molecule-predictions .label")[0] == "low"
    assert len(_texts(page, "#atom-list .label")) == 10


def test_errors_are_shown_as_the_server_words_them(page: Any, server: str) -> None:
    open_page(page, server)
    predict_smiles(page, "C1CC")
    assert page.inner_text("#molecule-error") == "422 graphs[0].smiles: invalid SMILES 'C1CC'"
    assert page.is_hidden("#molecule-result")
    page.set_input_files(
        "#image-file", files=[{"name": "x.png", "mimeType": "image/png", "buffer": b"not a png"}]
    )
    wait_for_image_answer(page)
    assert page.inner_text("#image-error").startswith("400 corrupt image")


def test_the_api_key_is_asked_for_and_kept(page: Any, keyed_server: str) -> None:
    page.goto(f"{keyed_server}/")
    dialog = page.locator("#key-dialog")
    dialog.wait_for(state="visible")
    assert "missing or wrong API key" in page.inner_text("#key-reason")
    page.fill("#key-input", "wrong")
    page.click("#key-submit")
    from playwright.sync_api import expect  # the page's CSP forbids wait_for_function's eval

    expect(page.locator("#key-input")).to_have_value("")
    assert dialog.is_visible()  # the server refused it: asked again
    page.fill("#key-input", KEY)
    page.click("#key-submit")
    page.wait_for_selector("body[data-ready=yes]", state="attached")
    assert dialog.is_hidden()
    rows = page.locator("#models-table tbody tr").all()
    assert sorted(r.get_attribute("data-model") for r in rows) == ["mol", "solreg", "vis"]
    assert page.evaluate("sessionStorage.getItem('plstm-api-key')") == KEY
    predict_smiles(page, "CCO")  # later requests send the key without asking
    assert page.get_attribute("#molecule-drawing", "data-coloured") == "yes"


def test_a_cancelled_key_prompt_shows_the_server_error(page: Any, keyed_server: str) -> None:
    page.goto(f"{keyed_server}/")
    page.locator("#key-dialog").wait_for(state="visible")
    page.click("#key-cancel")
    page.wait_for_selector("body[data-ready=yes]", state="attached")
    assert page.inner_text("#models-error").startswith("401 missing or wrong API key")
    assert page.is_hidden("#image-panel") and page.is_hidden("#molecule-panel")


def test_the_page_works_under_a_path_prefix(page: Any, server: str) -> None:
    """Relative URLs only: a proxy that serves the app under /plstm/ keeps the page working
    (emulated by routing /plstm/* to the server's /*)."""
    page.route(
        re.compile(r".*/plstm/.*"),
        lambda route: route.continue_(url=route.request.url.replace("/plstm/", "/", 1)),
    )
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    open_page(page, f"{server}/plstm")
    predict_smiles(page, "CCO")
    assert _texts(page, "#molecule-predictions .label")
    paths = [url.removeprefix(server) for url in requested]
    assert paths and all(p.startswith("/plstm/") for p in paths), paths


def test_screenshots_are_committed() -> None:
    """scripts/screenshots.py made them with the same set-up."""
    shots = Path(__file__).resolve().parents[3] / "docs" / "web"
    names = sorted(p.name for p in shots.glob("*.png"))
    assert names == [
        "api-key.png",
        "drawing.png",
        "error.png",
        "image.png",
        "models.png",
        "molecule.png",
        "page.png",
    ]
    for name in names:
        assert 2_000 < (shots / name).stat().st_size < 400_000, name
