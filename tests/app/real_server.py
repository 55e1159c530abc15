"""``plstm serve`` (``python -m app.cli serve``) on a free loopback port, for tests that need
the real HTTP server: :func:`running_server` starts it, waits until it is ready and kills it
(with every process it started) if the test leaves it running."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(
    repo: Path, log_path: Path, env: Mapping[str, str] | None = None, workers: int = 1
) -> Iterator[str]:
    """The base URL of a ready server on ``repo``; ``env`` adds ``PLSTM_*`` settings."""
    with server_process(repo, log_path, env, workers) as (base, _):
        yield base


@contextlib.contextmanager
def server_process(
    repo: Path, log_path: Path, env: Mapping[str, str] | None = None, workers: int = 1
) -> Iterator[tuple[str, subprocess.Popen]]:
    """:func:`running_server` with the server's process (to signal it)."""
    port = free_port()
    environ = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    command = [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--model-repository", str(repo), "--device", "cpu"]
    command += ["--workers", str(workers)]
    with log_path.open("w") as log:
        # its own process group: the cleanup reaches the workers and the engine too
        proc = subprocess.Popen(
            command, cwd=ROOT, env=environ, stdout=log, stderr=log, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _ready(base, workers):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"server did not become ready:\n{log_path.read_text()[-4000:]}"
                )
            time.sleep(0.2)
        yield base, proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _ready(base: str, workers: int) -> bool:
    """Ready on ``workers`` fresh connections in a row (each may reach another worker)."""
    try:
        return all(
            httpx.get(f"{base}/v2/health/ready", timeout=2).status_code == 200
            for _ in range(2 * workers)
        )
    except httpx.TransportError:
        return False
