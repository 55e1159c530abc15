"""deploy/healthcheck.py, the containers' health check: healthy only on a 200 from the server's
readiness endpoint (checked against a local HTTP server on the loopback address)."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from app.core.settings import Settings
from app.main import create_app
from tests.deploy.tools import DEPLOY

SCRIPT = DEPLOY / "healthcheck.py"
spec = importlib.util.spec_from_file_location("deploy_healthcheck", SCRIPT)
healthcheck = importlib.util.module_from_spec(spec)
spec.loader.exec_module(healthcheck)


class _Server(ThreadingHTTPServer):
    status = 200
    paths: list[str]


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.paths.append(self.path)
        self.send_response(self.server.status)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server() -> Iterator[_Server]:
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.paths = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _run(port: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT)],
        env={"PLSTM_PORT": str(port)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_healthy_only_when_ready(server: _Server) -> None:
    port = server.server_address[1]
    result = _run(port)
    assert result.returncode == 0, result.stdout
    assert server.paths == ["/v2/health/ready"]
    server.status = 503  # starting, draining, or no ready model
    result = _run(port)
    assert result.returncode == 1 and "HTTP 503" in result.stdout


def test_unhealthy_when_nothing_answers() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the check runs
    result = _run(port)
    assert result.returncode == 1 and "no answer" in result.stdout


def test_url_follows_the_server_settings(tmp_path: Path) -> None:
    assert healthcheck.ready_url({}) == "http://127.0.0.1:8000/v2/health/ready"
    assert Settings.model_fields["port"].default == 8000
    assert healthcheck.ready_url({"PLSTM_PORT": "9001"}).startswith("http://127.0.0.1:9001/")
    assert healthcheck.ready_url({"PLSTM_HEALTHCHECK_URL": "http://h:1/x"}) == "http://h:1/x"
    # the path is the server's readiness route
    app = create_app(Settings(model_repository=tmp_path, device="cpu"))
    assert healthcheck.READY_PATH in app.openapi()["paths"]
