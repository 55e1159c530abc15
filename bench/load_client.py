"""Closed-loop HTTP load for ``bench/bench_server.py``: concurrent clients POSTing images.

One process runs ``--concurrency`` asyncio tasks, each with its own keep-alive HTTP/1.1
connection (:class:`Connection`, a lean asyncio-streams client); each task posts the next image
(raw ``image/png`` body) as soon as its previous answer arrived, from start-up until the
wall-clock time ``--end``. The measurement window is ``[--start,
--end]`` (``time.time()`` seconds, shared by every client process of a run): requests before
``--start`` are warm-up. Prints one JSON object on stdout:

- ``completed``: 200 answers that arrived inside the window (throughput = completed / window);
- ``latencies_s``: the latencies of those answers (sampled by arrival inside the window, so
  requests longer than the window still count);
- ``errors``: other outcomes inside the window (HTTP status or exception name → count) and
  ``first_error``: the first such answer's body, for the report;
- ``server_ms_p50``: medians of the ``timings`` the server reports in its answers (``queue_ms``,
  ``inference_ms``, ``total_ms`` of /v1 classify; empty for a server that reports none).

Only the standard library is imported, so several client processes start fast and do not
compete with the servers for anything but CPU.
Usage: python3 bench/load_client.py --url URL --concurrency N --start T0 --end T1 IMAGE...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

HEADERS = {"content-type": "image/png"}
TIMEOUT_S = 120.0


@dataclass
class Record:
    """What the clients of one process saw inside the window."""

    start: float
    end: float
    completed: int = 0
    latencies_s: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    first_error: str | None = None
    server_ms: dict[str, list[float]] = field(default_factory=dict)

    def add(self, sent: float, latency: float, outcome: str, body: str) -> None:
        """One answer: ``sent`` wall-clock time, ``latency`` seconds, ``outcome`` "200" or
        the status / exception name, ``body`` the error text (kept for the first error)."""
        received = sent + latency
        if not self.start <= received <= self.end:
            return
        if outcome != "200":
            self.errors[outcome] += 1
            if self.first_error is None:
                self.first_error = body[:500]
            return
        self.completed += 1
        self.latencies_s.append(latency)

    def add_timings(self, answer: bytes) -> None:
        """Keep the server's own ``timings`` (ms) of a 200 answer that reports them."""
        try:
            timings = json.loads(answer).get("timings")
        except (ValueError, AttributeError):
            return
        if isinstance(timings, dict):
            for key, value in timings.items():
                if isinstance(value, int | float):
                    self.server_ms.setdefault(key, []).append(float(value))


class Connection:
    """One keep-alive HTTP/1.1 connection that POSTs raw bodies and reads whole answers.

    A plain asyncio-streams client: httpx.AsyncClient spends about 1 ms of client CPU per
    request (measured on the 2-core CI machine: 1.29 ms vs 0.29 ms for a GET round trip to
    the server), which would be counted as server latency and would steal CPU from the
    servers under load. Answers must carry Content-Length (uvicorn's JSON answers do).
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"need an http:// URL, got {url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        target = parts.path or "/"
        self.target = f"{target}?{parts.query}" if parts.query else target
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, body: bytes) -> tuple[int, bytes]:
        """Send ``body`` as image/png; (status, answer body). Reconnects when needed."""
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        head = (
            f"POST {self.target} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n"
            f"content-type: {HEADERS['content-type']}\r\ncontent-length: {len(body)}\r\n\r\n"
        )
        try:
            self._writer.write(head.encode() + body)
            raw = await self._reader.readuntil(b"\r\n\r\n")
            lines = raw.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            headers = dict(
                (k.strip().lower(), v.strip())
                for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)
            )
            answer = await self._reader.readexactly(int(headers["content-length"]))
        except BaseException:
            await self.close()
            raise
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, answer

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        self._reader = self._writer = None


async def _client(url: str, images: list[bytes], first: int, record: Record) -> None:
    connection = Connection(url)
    index = first
    try:
        while time.time() < record.end:
            body = images[index % len(images)]
            index += 1
            sent = time.time()
            t0 = time.perf_counter()
            try:
                status, answer = await asyncio.wait_for(connection.post(body), TIMEOUT_S)
                outcome = str(status)
                text = "" if status == 200 else answer.decode("utf-8", "replace")
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
                outcome, text, answer = type(exc).__name__, str(exc), b""
            latency = time.perf_counter() - t0
            record.add(sent, latency, outcome, text)
            if outcome == "200" and record.start <= sent + latency <= record.end:
                record.add_timings(answer)
    finally:
        await connection.close()


async def run_load(
    url: str, images: list[bytes], concurrency: int, start: float, end: float
) -> Record:
    """Run ``concurrency`` closed-loop clients (one connection each) against ``url`` until
    ``end``."""
    record = Record(start, end)
    await asyncio.gather(*(_client(url, images, i, record) for i in range(concurrency)))
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="full URL to POST the images to")
    parser.add_argument("--concurrency", type=int, required=True, help="concurrent clients")
    parser.add_argument("--start", type=float, required=True, help="window start (time.time())")
    parser.add_argument("--end", type=float, required=True, help="window end (time.time())")
    parser.add_argument("images", nargs="+", type=Path, help="PNG files, posted in turn")
    args = parser.parse_args(argv)
    images = [p.read_bytes() for p in args.images]
    record = asyncio.run(run_load(args.url, images, args.concurrency, args.start, args.end))
    json.dump(
        {
            "completed": record.completed,
            "latencies_s": record.latencies_s,
            "errors": dict(record.errors),
            "first_error": record.first_error,
            "server_ms_p50": {k: statistics.median(v) for k, v in record.server_ms.items()},
        },
        sys.stdout,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
