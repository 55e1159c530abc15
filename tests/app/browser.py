"""Chromium driven by Playwright, for the browser tests of the web page and for
scripts/screenshots.py: Debian's ``chromium`` (installed by scripts/install-browser.sh; never
``playwright install``, which downloads a browser of its own), the real server
(``python -m app.cli serve``) on a free loopback port, and the page actions both use."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_MODELS = ROOT / "model_repository"
ARROW_IMAGE = ROOT / "examples" / "arrow-pointing.png"
ARROW_192 = ROOT / "examples" / "arrow-not-pointing-192px.png"
CHROMIUM = Path(os.environ.get("PLSTM_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
START_TIMEOUT_S = 180.0
ANSWER_TIMEOUT_MS = 120_000
"""How long the page may take to show an answer (the CI machine's two cores are shared)."""

COLOURED_PIXELS_JS = """
(image) => {
  const canvas = document.createElement("canvas");
  canvas.width = image.naturalWidth || image.width;
  canvas.height = image.naturalHeight || image.height;
  canvas.getContext("2d").drawImage(image, 0, 0);
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let red = 0;
  let blue = 0;
  for (let i = 0; i < data.length; i += 4) {
    const [r, g, b] = [data[i], data[i + 1], data[i + 2]];
    if (r - g > 15 && r - b > 15) red++;
    if (b - r > 15 && b - g > 5) blue++;
  }
  return { red, blue, pixels: data.length / 4 };
}
"""


def launch_chromium(playwright: Any) -> Any:
    """Debian's chromium, headless, through ``playwright.chromium``."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(repository: Path, **settings: str) -> Iterator[str]:
    """``plstm serve`` of ``repository`` on the CPU with ``PLSTM_*`` ``settings`` (e.g.
    ``PLSTM_API_KEY="s3cret"``): its base URL once it is ready; stopped (SIGTERM) on exit.
    RuntimeError with the end of its log when it does not become ready."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), **settings}
    command = [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--model-repository", str(repository), "--device", "cpu"]
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while not _ready(base):
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"the server did not become ready:\n{log.read()[-4000:]}")
                time.sleep(0.2)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _ready(base: str) -> bool:
    with contextlib.suppress(httpx.TransportError):
        return httpx.get(f"{base}/v2/health/ready", timeout=2).status_code == 200
    return False


def open_page(page: Any, base: str) -> None:
    """Load the page and wait until its scripts have set it up."""
    page.goto(f"{base}/")
    page.wait_for_selector("body[data-ready=yes]", state="attached", timeout=ANSWER_TIMEOUT_MS)


def upload_image(page: Any, path: Path) -> None:
    """Pick ``path`` in the image panel and wait for the answer (classes and overlay)."""
    page.set_input_files("#image-file", str(path))
    wait_for_image_answer(page)


def wait_for_image_answer(page: Any) -> None:
    page.wait_for_selector(
        "#image-view[data-overlay], #image-error:not([hidden])",
        state="attached",
        timeout=ANSWER_TIMEOUT_MS,
    )


def draw_on_sketch(page: Any, strokes: list[list[tuple[float, float]]]) -> None:
    """Draw ``strokes`` (points in 0..1 of the drawing area) with the mouse."""
    box = page.locator("#sketch").bounding_box()
    for stroke in strokes:
        x, y = stroke[0]
        page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"])
        page.mouse.down()
        for x, y in stroke[1:]:
            page.mouse.move(box["x"] + x * box["width"], box["y"] + y * box["height"], steps=4)
        page.mouse.up()


ARROW_AND_CIRCLE = [
    [(0.8, 0.55), (0.68, 0.47)],  # a short arrow pointing up and left ...
    [(0.702, 0.526), (0.68, 0.47), (0.74, 0.469)],
    [(0.39, 0.25), (0.35, 0.29), (0.31, 0.25), (0.35, 0.21), (0.39, 0.25)],  # ... at a dot
    [(0.35, 0.24), (0.35, 0.26)],
]
"""A drawing of an arrow and a circle (strokes for :func:`draw_on_sketch`)."""


def predict_smiles(page: Any, smiles: str) -> None:
    """Type ``smiles``, press Predict and wait for the answer (or the error)."""
    page.fill("#smiles", smiles)
    page.click("#molecule-submit")
    wait_for_molecule_answer(page)


def wait_for_molecule_answer(page: Any) -> None:
    page.wait_for_selector(
        "#molecule-drawing[data-coloured], #molecule-error:not([hidden])",
        state="attached",
        timeout=ANSWER_TIMEOUT_MS,
    )


def coloured_pixels(page: Any, selector: str) -> dict[str, int]:
    """Pixels of the canvas or image ``selector`` that are reddish and bluish (any strength
    of the page's contribution colours; black, white and greys are neither)."""
    # polled from here: wait_for_function's polling evaluates strings, which the page's CSP
    # forbids (page.evaluate goes through the debugging protocol and is not affected)
    loaded = "(s) => { const e = document.querySelector(s); return e.complete !== false; }"
    deadline = time.monotonic() + ANSWER_TIMEOUT_MS / 1000
    while not page.evaluate(loaded, selector):
        assert time.monotonic() < deadline, f"{selector} did not finish loading"
        page.wait_for_timeout(50)
    return page.eval_on_selector(selector, COLOURED_PIXELS_JS)
