"""Security headers on every answer (API, errors, documentation pages, static assets, a 500),
and ``HEAD`` on the health routes: the status and headers of ``GET``, without a body."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.api.security_headers import API_CSP, DOCS_CSP
from app.core.settings import Settings
from app.main import create_app
from tests.app.model_repo import make_repository

MAX_BODY = 1000


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    repo = make_repository(tmp_path_factory.mktemp("model_repository"))
    settings = Settings(model_repository=repo, device="cpu", warmup=False, max_body_bytes=MAX_BODY)
    app = create_app(settings)

    @app.get("/test-fault", include_in_schema=False)
    async def fault() -> None:
        raise RuntimeError("a bug")

    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


ANSWERS = [
    ("GET", "/v1/models", {}, 200),
    ("GET", "/v1/models/nope", {}, 404),
    ("GET", "/metrics", {}, 200),
    ("POST", "/v1/models/vis/classify", {"content": b"x" * (MAX_BODY + 1)}, 413),
    ("GET", "/test-fault", {}, 500),
]


@pytest.mark.parametrize(("method", "url", "extra", "status"), ANSWERS, ids=lambda v: str(v))
def test_api_answers(client: TestClient, method: str, url: str, extra: dict, status: int) -> None:
    response = client.request(method, url, **extra)
    assert response.status_code == status
    headers = response.headers
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["content-security-policy"] == API_CSP
    assert headers["cache-control"] == "no-store"


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_documentation_pages(client: TestClient, page: str) -> None:
    headers = client.get(page).headers
    assert headers["content-security-policy"] == DOCS_CSP
    assert "script-src 'self';" in DOCS_CSP  # no inline or foreign script
    assert headers["x-frame-options"] == "DENY"


def test_static_assets_are_revalidated(client: TestClient) -> None:
    response = client.get("/static/swagger-ui/swagger-ui.css")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-content-type-options"] == "nosniff"
    again = client.get(
        "/static/swagger-ui/swagger-ui.css", headers={"If-None-Match": response.headers["etag"]}
    )
    assert again.status_code == 304


@pytest.mark.parametrize(
    "url",
    [
        "/v2/health/live",
        "/v2/health/ready",
        "/healthz",
        "/v2/models/vis/ready",
        "/v2/models/vis/versions/1/ready",
        "/v2/models/nope/ready",
    ],
)
def test_head_on_health_routes(client: TestClient, url: str) -> None:
    get, head = client.get(url), client.head(url)
    assert head.status_code == get.status_code
    assert head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"]
    assert head.headers["content-type"] == get.headers["content-type"]
