"""Screenshots of every state of the web page, for docs/web/ and the README.

    .venv/bin/python scripts/screenshots.py [--out docs/web]

Starts the server on the shipped models (with an API key, so that the key prompt shows
first), drives the page in Debian's chromium through Playwright with the set-up of the
browser tests (tests/app/browser.py; scripts/install-browser.sh installs the browser) and
writes small palette PNGs: api-key, models, image, drawing, molecule, error and page (the
image and molecule answers side by side, scaled down, for the README).
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.app.browser import (  # noqa: E402  (the repository root is on the path now)
    ANSWER_TIMEOUT_MS,
    ARROW_AND_CIRCLE,
    ARROW_IMAGE,
    SHIPPED_MODELS,
    draw_on_sketch,
    launch_chromium,
    predict_smiles,
    running_server,
    upload_image,
    wait_for_image_answer,
)

KEY = "screenshots"
VIEWPORT = {"width": 1100, "height": 820}
PAGE_SCALE = 0.45
BACKGROUND = (243, 245, 247)  # --page of app/web/style.css
MOLECULE = "CC(=O)Oc1ccccc1C(=O)O"  # aspirin


def save(png: bytes, path: Path) -> bytes:
    """``png`` as a 256-colour PNG at ``path``; returns ``png``."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    print(f"{path}: {path.stat().st_size} bytes")
    return png


def side_by_side(shots: list[bytes], scale: float) -> bytes:
    """The screenshots next to each other, tops aligned, on the page's background, scaled."""
    images = [Image.open(io.BytesIO(png)).convert("RGB") for png in shots]
    gap = 24
    width = sum(i.width for i in images) + gap * (len(images) + 1)
    height = max(i.height for i in images) + 2 * gap
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    x = gap
    for image in images:
        canvas.paste(image, (x, gap))
        x += image.width + gap
    size = (round(width * scale), round(height * scale))
    out = io.BytesIO()
    canvas.resize(size, Image.Resampling.LANCZOS).save(out, format="PNG")
    return out.getvalue()


def shoot(base: str, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport=VIEWPORT)
        page.set_default_timeout(ANSWER_TIMEOUT_MS)
        page.goto(f"{base}/")
        page.locator("#key-dialog").wait_for(state="visible")
        page.fill("#key-input", KEY)
        save(page.screenshot(), out / "api-key.png")
        page.click("#key-submit")
        page.wait_for_selector("body[data-ready=yes]", state="attached")
        save(page.locator("#models").screenshot(), out / "models.png")

        draw_on_sketch(page, ARROW_AND_CIRCLE)
        page.click("#sketch-classify")
        wait_for_image_answer(page)
        save(page.locator("#image-panel").screenshot(), out / "drawing.png")
        upload_image(page, ARROW_IMAGE)
        image = save(page.locator("#image-panel").screenshot(), out / "image.png")

        predict_smiles(page, "C1CC")
        save(page.locator("#molecule-panel").screenshot(), out / "error.png")
        predict_smiles(page, MOLECULE)
        molecule = save(page.locator("#molecule-panel").screenshot(), out / "molecule.png")

        save(side_by_side([image, molecule], PAGE_SCALE), out / "page.png")
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "web", help="folder")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with running_server(SHIPPED_MODELS, PLSTM_API_KEY=KEY) as base:
        shoot(base, args.out.resolve())


if __name__ == "__main__":
    main()
