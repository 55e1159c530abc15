"""The API documentation: ``/openapi.json``, Swagger UI at ``/docs`` and ReDoc at ``/redoc``.

Both pages load their scripts and styles from ``/static`` (``app/static``: the vendored
``swagger-ui-dist`` and ``redoc`` packages, see ``scripts/vendor_docs_assets.sh``), never from
another host, and run no inline script, so they work offline under a strict
Content-Security-Policy (:mod:`app.api.security_headers`). With an API key configured the three
routes need it too, unless ``PLSTM_DOCS_REQUIRE_API_KEY=false``; ``/static`` is always open
(it holds only the vendored assets).
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.staticfiles import StaticFiles

from app.api.dependencies import API_KEY_HEADER, BEARER, SettingsDep, require_api_key
from app.api.security_headers import DOCS_URL, REDOC_URL, STATIC_URL

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
OPENAPI_URL = "/openapi.json"
TITLE = "pLSTM model server"


async def docs_api_key(
    settings: SettingsDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
    header: Annotated[str | None, Depends(API_KEY_HEADER)],
) -> None:
    """The API key check of :func:`app.api.dependencies.require_api_key`, unless the settings open
    the documentation."""
    if settings.docs_require_api_key:
        await require_api_key(settings, bearer, header)


router = APIRouter(include_in_schema=False, dependencies=[Depends(docs_api_key)])


def _prefix(request: Request) -> str:
    """The path the app is mounted under behind a proxy (``root_path``), for absolute URLs."""
    return str(request.scope.get("root_path", "")).rstrip("/")


@router.get(OPENAPI_URL)
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


def swagger_page(prefix: str) -> str:
    """The Swagger UI page for an app served under ``prefix``."""
    static = escape(prefix + STATIC_URL)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{TITLE} - Swagger UI</title>
<link rel="icon" type="image/png" href="{static}/swagger-ui/favicon-32x32.png">
<link rel="stylesheet" href="{static}/swagger-ui/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{escape(prefix + OPENAPI_URL)}"></div>
<script src="{static}/swagger-ui/swagger-ui-bundle.js"></script>
<script src="{static}/docs/swagger-init.js"></script>
</body>
</html>
"""


def redoc_page(prefix: str) -> str:
    """The ReDoc page for an app served under ``prefix``."""
    static = escape(prefix + STATIC_URL)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{TITLE} - ReDoc</title>
<link rel="icon" type="image/png" href="{static}/swagger-ui/favicon-32x32.png">
</head>
<body>
<redoc spec-url="{escape(prefix + OPENAPI_URL)}"></redoc>
<script src="{static}/redoc/redoc.standalone.js"></script>
</body>
</html>
"""


@router.get(DOCS_URL)
async def swagger_ui(request: Request) -> HTMLResponse:
    return HTMLResponse(swagger_page(_prefix(request)))


@router.get(REDOC_URL)
async def redoc(request: Request) -> HTMLResponse:
    return HTMLResponse(redoc_page(_prefix(request)))


def install_docs(app: FastAPI) -> None:
    """The documentation routes and the static assets on ``app`` (created with
    ``openapi_url=None``, so that these replace FastAPI's own)."""
    app.include_router(router)
    app.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="static")
