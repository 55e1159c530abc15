"""The web page's files (GET / and /web/{file}): served with their types, a
Content-Security-Policy, ETags and without the API key; and written so that a strict policy
and a proxy under any path prefix keep them working (no inline code, relative URLs only)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.api.routes.web import CONTENT_SECURITY_POLICY, WEB_DIR
from app.core.settings import Settings
from app.main import create_app

FILES = sorted(p.name for p in WEB_DIR.iterdir())
SCRIPTS = [name for name in FILES if name.endswith(".js")]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    empty = tmp_path_factory.mktemp("no_models")
    settings = Settings(model_repository=empty, device="cpu", warmup=False, api_key="s3cret")
    with TestClient(create_app(settings)) as c:
        yield c


def test_the_page_is_served_at_the_root_without_the_api_key(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert response.text == (WEB_DIR / "index.html").read_text()
    assert client.get("/v1/models").status_code == 401  # the API itself still needs it


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("main.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("icon.svg", "image/svg+xml"),
    ],
)
def test_assets_are_served_with_their_type(
    client: TestClient, name: str, content_type: str
) -> None:
    response = client.get(f"/web/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert response.content == (WEB_DIR / name).read_bytes()


def test_an_unchanged_file_is_answered_304(client: TestClient) -> None:
    etag = client.get("/web/api.js").headers["etag"]
    again = client.get("/web/api.js", headers={"If-None-Match": etag})
    assert (again.status_code, again.content) == (304, b"")
    assert client.get("/web/api.js", headers={"If-None-Match": '"other"'}).status_code == 200


@pytest.mark.parametrize("name", ["nope.js", "..%2Fmain.py", "index.htm", "%2E%2E"])
def test_other_paths_are_404(client: TestClient, name: str) -> None:
    response = client.get(f"/web/{name}")
    assert response.status_code == 404
    assert set(response.json()) == {"error"}


def test_every_file_of_the_page_is_served(client: TestClient) -> None:
    html = (WEB_DIR / "index.html").read_text()
    linked = set(re.findall(r'(?:src|href)="web/([^"]+)"', html))
    imported = {
        name
        for script in SCRIPTS
        for name in re.findall(r'from "\./([^"]+)"', (WEB_DIR / script).read_text())
    }
    assert linked | imported | {"index.html"} == set(FILES)
    for name in linked | imported:
        assert client.get(f"/web/{name}").status_code == 200


def test_the_html_has_no_inline_code() -> None:
    html = (WEB_DIR / "index.html").read_text()
    assert re.findall(r"<script(?![^>]*\bsrc=)", html) == []  # scripts are files
    assert re.findall(r"\son[a-z]+\s*=", html) == []  # no inline event handlers
    assert "<style" not in html and "style=" not in html
    assert "javascript:" not in html


@pytest.mark.parametrize("name", FILES)
def test_urls_are_relative(name: str) -> None:
    """The page may sit behind a proxy under any prefix: no absolute URL, no other host."""
    text = (WEB_DIR / name).read_text()
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in text and "//cdn" not in text
    assert re.findall(r"""(?:src|href)=["']/""", text) == []
    assert re.findall(r"""(?:fetch|request|getJson|postJson|postImage)\(\s*["'`]/""", text) == []


def test_inline_scripts_are_refused_by_the_policy() -> None:
    policy = dict(part.strip().split(" ", 1) for part in CONTENT_SECURITY_POLICY.split(";"))
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
    assert policy["connect-src"] == "'self'" and policy["frame-ancestors"] == "'none'"


def test_the_page_files_are_package_data() -> None:
    pyproject = (Path(__file__).resolve().parents[3] / "pyproject.toml").read_text()
    patterns = re.search(r"app = \[([^\]]*)\]", pyproject).group(1)
    suffixes = {p.strip().strip('"').removeprefix("web/*") for p in patterns.split(",")}
    assert {Path(name).suffix for name in FILES} <= suffixes
