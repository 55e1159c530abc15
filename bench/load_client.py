"""Closed-loop HTTP load for ``bench/bench_server.py``: concurrent clients POSTing images.

One process runs ``--concurrency`` asyncio tasks sharing one keep-alive ``httpx.AsyncClient``;
each task posts the next image (raw ``image/png`` body) as soon as its previous answer arrived,
from start-up until the wall-clock time ``--end``. The measurement window is ``[--start,
--end]`` (``time.time()`` seconds, shared by every client process of a run): requests before
``--start`` are warm-up. Prints one JSON object on stdout:

- ``completed``: 200 answers that arrived inside the window (throughput = completed / window);
- ``latencies_s``: the latencies of those answers (sampled by arrival inside the window, so
  requests longer than the window still count);
- ``errors``: other outcomes inside the window (HTTP status or exception name → count) and
  ``first_error``: the first such answer's body, for the report.

Only httpx and the standard library are imported, so several client processes start fast and
do not compete with the servers for anything but CPU.
Usage: python3 bench/load_client.py --url URL --concurrency N --start T0 --end T1 IMAGE...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

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


async def _client(
    client: httpx.AsyncClient, url: str, images: list[bytes], first: int, record: Record
) -> None:
    index = first
    while time.time() < record.end:
        body = images[index % len(images)]
        index += 1
        sent = time.time()
        t0 = time.perf_counter()
        try:
            response = await client.post(url, content=body, headers=HEADERS)
            outcome, text = str(response.status_code), response.text
            if response.status_code == 200:
                text = ""
        except httpx.HTTPError as exc:
            outcome, text = type(exc).__name__, str(exc)
        record.add(sent, time.perf_counter() - t0, outcome, text)


async def run_load(
    url: str, images: list[bytes], concurrency: int, start: float, end: float
) -> Record:
    """Run ``concurrency`` closed-loop clients against ``url`` until ``end``."""
    record = Record(start, end)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=TIMEOUT_S, limits=limits) as client:
        await asyncio.gather(*(_client(client, url, images, i, record) for i in range(concurrency)))
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
        },
        sys.stdout,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
