"""The hardened HTTP protocol of ``plstm serve`` (:mod:`app.api.http_protocol`) on the real server,
with short limits: oversized or overlong request heads, slow heads and bodies, idle
connections and too many connections each get their answer (431 / 408 / 503 as
``{"error": ...}`` with the security headers, then the connection is closed), over raw
sockets."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from tests.app.model_repo import make_repository
from tests.app.real_server import running_server

HEADER_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 1.0
KEEP_ALIVE_S = 2
MAX_CONNECTIONS = 12
SETTINGS = {
    "PLSTM_MAX_HEADER_BYTES": "8192",
    "PLSTM_MAX_HEADER_COUNT": "50",
    "PLSTM_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
    "PLSTM_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
    "PLSTM_KEEP_ALIVE_TIMEOUT_S": str(KEEP_ALIVE_S),
    "PLSTM_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
    "PLSTM_WARMUP": "false",
}
LIVE = b"GET /v2/health/live HTTP/1.1\r\nHost: test\r\n"
READ_TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    tmp = tmp_path_factory.mktemp("protocol")
    repo = make_repository(tmp / "model_repository")
    with running_server(repo, tmp / "server.log", SETTINGS) as base:
        yield int(base.rsplit(":", 1)[1])


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(READ_TIMEOUT_S)
    return sock


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass  # closed with our unread bytes still queued: what it sent before is kept
    return data


def _answer(data: bytes) -> tuple[int, dict[str, str], dict]:
    """Status, headers (lower-case names) and JSON body of one HTTP answer."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body)


def _refused(data: bytes, status: int, words: str) -> dict[str, str]:
    got, headers, body = _answer(data)
    assert (got, headers["connection"]) == (status, "close"), data[:300]
    assert words in body["error"]
    assert headers["x-content-type-options"] == "nosniff"
    return headers


def test_a_normal_request_is_answered(port: int) -> None:
    with _connect(port) as sock:
        sock.sendall(LIVE + b"Connection: close\r\n\r\n")
        status, _, body = _answer(_read_until_closed(sock))
    assert (status, body) == (200, {"live": True})


def test_an_endless_header_is_cut_off_at_the_limit(port: int) -> None:
    with _connect(port) as sock:
        sock.sendall(LIVE + b"X-Big: " + b"a" * 1_000_000)  # never finished
        _refused(_read_until_closed(sock), 431, "exceeds the limit of 8192 bytes")


def test_a_head_over_the_byte_limit(port: int) -> None:
    with _connect(port) as sock:
        sock.sendall(LIVE + b"X-Big: " + b"a" * 9000 + b"\r\n\r\n")
        _refused(_read_until_closed(sock), 431, "exceeds the limit of 8192 bytes")


def test_too_many_header_fields(port: int) -> None:
    fields = b"".join(b"X-F%d: 1\r\n" % i for i in range(60))
    with _connect(port) as sock:
        sock.sendall(LIVE + fields + b"\r\n")
        _refused(_read_until_closed(sock), 431, "61 header fields exceed the limit of 50")


def test_a_slow_head_gets_408(port: int) -> None:
    with _connect(port) as sock:
        sock.sendall(LIVE)  # the head is never finished
        started = time.monotonic()
        _refused(_read_until_closed(sock), 408, "request head not received within 2 s")
        # the server's clock starts when the bytes arrive, a little before sendall returns here
        assert HEADER_TIMEOUT_S - 0.5 <= time.monotonic() - started < HEADER_TIMEOUT_S + 5


def test_blank_lines_before_a_head_count_as_a_slow_head(port: int) -> None:
    with _connect(port) as sock:
        sock.sendall(b"\r\n" * 10)  # the parser skips them, the clock does not
        started = time.monotonic()
        _refused(_read_until_closed(sock), 408, "request head not received within 2 s")
        assert HEADER_TIMEOUT_S - 0.5 <= time.monotonic() - started < HEADER_TIMEOUT_S + 5


def test_a_slow_body_gets_408(port: int) -> None:
    head = b"POST /v2/models/mol/infer HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\n"
    with _connect(port) as sock:
        sock.sendall(head + b"{")  # 99 bytes never come
        started = time.monotonic()
        _refused(_read_until_closed(sock), 408, "request body not received within 1 s")
        # the server's clock starts when the head arrives, a little before sendall returns here
        assert BODY_TIMEOUT_S - 0.5 <= time.monotonic() - started < BODY_TIMEOUT_S + 5


def test_an_idle_new_connection_is_closed(port: int) -> None:
    with _connect(port) as sock:
        started = time.monotonic()
        assert _read_until_closed(sock) == b""
        # the server's clock starts when it accepts, a little before connect() returns here
        assert KEEP_ALIVE_S - 0.5 <= time.monotonic() - started < KEEP_ALIVE_S + 5


def test_garbage_gets_400(port: int) -> None:
    with _connect(port) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        _refused(_read_until_closed(sock), 400, "invalid HTTP request")


def test_over_the_connection_limit_503(port: int) -> None:
    held = [_connect(port) for _ in range(MAX_CONNECTIONS)]
    try:
        for sock in held:
            sock.sendall(LIVE)  # heads in progress keep their connections open
        time.sleep(0.2)
        with _connect(port) as sock:
            sock.sendall(LIVE + b"\r\n")
            headers = _refused(_read_until_closed(sock), 503, "too many open connections")
        assert headers["retry-after"] == "1"
    finally:
        for sock in held:
            sock.close()
