"""The documentation pages (``/docs``, ``/redoc``) load every asset from this server, the
assets ship with the package, and the pages need the API key when one is set (unless
PLSTM_DOCS_REQUIRE_API_KEY is off)."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.api.docs import STATIC_DIR
from app.core.settings import Settings
from app.main import create_app
from tests.app.model_repo import make_repository

ROOT = Path(__file__).resolve().parents[3]
PAGES = ["/docs", "/redoc"]
KEY = {"X-API-Key": "d0cs"}
ASSET = re.compile(r'(?:src|href|spec-url|data-openapi-url)="([^"]+)"')
ASSET_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_repository(tmp_path_factory.mktemp("model_repository"))


def _client(repo: Path, **settings: object) -> TestClient:
    return TestClient(create_app(Settings(model_repository=repo, device="cpu", **settings)))


@pytest.fixture(scope="module")
def client(repo: Path) -> Iterator[TestClient]:
    with _client(repo, warmup=False) as c:
        yield c


@pytest.mark.parametrize("page", PAGES)
def test_no_external_url_in_the_page(client: TestClient, page: str) -> None:
    response = client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "//" not in response.text.replace("<!doctype html>", "")


@pytest.mark.parametrize("page", PAGES)
def test_every_asset_of_the_page_is_served(client: TestClient, page: str) -> None:
    urls = ASSET.findall(client.get(page).text)
    assert len(urls) >= 2 and "/openapi.json" in urls
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        expected = ASSET_TYPES.get(Path(url).suffix, "application/json")
        assert response.headers["content-type"].startswith(expected), url


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("swagger-ui/swagger-ui-bundle.js", "SwaggerUIBundle"),
        ("redoc/redoc.standalone.js", "Redoc"),
        ("swagger-ui/LICENSE", "Apache License"),
        ("redoc/LICENSE", "MIT License"),
        ("VERSIONS", "swagger-ui-dist 5.36.0\nredoc 2.5.4"),
    ],
)
def test_vendored_assets_and_licences(path: str, words: str) -> None:
    assert words in (STATIC_DIR / path).read_text()


def test_the_assets_ship_in_the_package() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["app"]
    app = ROOT / "app"
    shipped = {path for pattern in patterns for path in app.glob(pattern) if path.is_file()}
    assert {p for p in shipped if STATIC_DIR in p.parents} == {
        path for path in STATIC_DIR.rglob("*") if path.is_file()
    }


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json"])
def test_needs_the_key_when_one_is_set(repo: Path, path: str) -> None:
    with _client(repo, warmup=False, api_key="d0cs") as c:
        assert c.get(path).status_code == 401
        assert c.get(path, headers=KEY).status_code == 200
        assert c.get("/static/swagger-ui/swagger-ui.css").status_code == 200  # assets: open


def test_open_when_configured_so(repo: Path) -> None:
    with _client(repo, warmup=False, api_key="d0cs", docs_require_api_key=False) as c:
        assert [c.get(path).status_code for path in ("/docs", "/redoc", "/openapi.json")] == [
            200
        ] * 3
        assert c.get("/v1/models").status_code == 401
