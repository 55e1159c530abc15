"""The web page: ``GET /`` (``app/web/index.html``) and its scripts, styles and icon under
``GET /web/{file}``.

The files are read once, when this module is imported, and answered from memory with an ETag
(``If-None-Match`` gets 304); only files of the folder itself are served, so no request path
reaches anything else. The page needs no API key (it asks for one when the API answers 401).
Every answer carries a Content-Security-Policy that allows only this origin's scripts, styles
and connections (plus ``blob:`` images: the molecule drawings), so the page runs no inline
script and loads nothing from elsewhere.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.core.errors import ApiError

WEB_DIR = Path(__file__).resolve().parents[2] / "web"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
}


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    media_type: str
    etag: str


def _load(directory: Path) -> dict[str, StaticFile]:
    files = {}
    for path in sorted(directory.iterdir()):
        media_type = CONTENT_TYPES.get(path.suffix)
        if path.is_file() and media_type is not None:
            body = path.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            files[path.name] = StaticFile(body, media_type, etag)
    return files


FILES = _load(WEB_DIR)

router = APIRouter(include_in_schema=False)


def _answer(request: Request, file: StaticFile) -> Response:
    headers = {**HEADERS, "ETag": file.etag}
    if request.headers.get("if-none-match") == file.etag:
        return Response(status_code=304, headers=headers)
    return Response(file.body, media_type=file.media_type, headers=headers)


@router.get("/")
async def page(request: Request) -> Response:
    return _answer(request, FILES["index.html"])


@router.get("/web/{name}")
async def asset(request: Request, name: str) -> Response:
    file = FILES.get(name)
    if file is None:
        raise ApiError(404, f"no file {name!r} in the web page")
    return _answer(request, file)
