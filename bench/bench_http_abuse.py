"""What the hardened HTTP layer does with abusive clients, on ``plstm serve`` with its default
limits (tiny test models): each scenario's answer, how long the server held the connection(s),
the liveness latency meanwhile and the server's memory. Prints a markdown table.

Scenarios (the reproducers of the issue): one 64 MB header; 1,000 connections each stuck in
the middle of a request head (slowloris); 1,000 connections each stuck in the middle of a
body; one body sent at one byte every 2 s; 1,000 connections that send nothing. (A client
still sending its 64 MB when the server answers 431 and closes sees the connection reset; one
that reads while it sends gets the 431: ``tests/app/api/test_http_protocol.py``.)

    python bench/bench_http_abuse.py
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.app.model_repo import make_repository  # noqa: E402
from tests.app.real_server import server_process  # noqa: E402

MANY = 1000
HEAD = b"POST /v2/models/mol/infer HTTP/1.1\r\nHost: bench\r\n"
BODY_HEAD = HEAD + b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _held(port: int, first: bytes, trickle: bytes = b"", every_s: float = 0.0) -> tuple:
    """Opens a connection, sends ``first`` (then ``trickle`` every ``every_s`` seconds) until
    the server answers or closes; returns (status line, seconds held)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    with contextlib.suppress(ConnectionError):
        writer.write(first)
        await writer.drain()
    answer = b"reset by the server"

    async def trickle_bytes() -> None:
        while trickle:
            await asyncio.sleep(every_s)
            writer.write(trickle)
            await writer.drain()

    sender = asyncio.create_task(trickle_bytes())
    try:
        answer = await reader.read(65536) or b""
    except ConnectionError:
        pass
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await sender
        writer.close()
    status = answer.split(b"\r\n", 1)[0].decode() or "closed without an answer"
    return status, time.monotonic() - started


async def _probe_liveness(base: str, stop: asyncio.Event, latencies: list[float]) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        while not stop.is_set():
            started = time.perf_counter()
            response = await client.get("/v2/health/live")
            assert response.status_code == 200
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.1)


async def scenario(
    base: str, pid: int, clients: Callable[[int], list[Awaitable[tuple]]]
) -> dict[str, str]:
    port = int(base.rsplit(":", 1)[1])
    stop, latencies = asyncio.Event(), []
    probe = asyncio.create_task(_probe_liveness(base, stop, latencies))
    peak = [rss_mb(pid)]

    async def sample_rss() -> None:
        while not stop.is_set():
            peak.append(rss_mb(pid))
            await asyncio.sleep(0.2)

    sampler = asyncio.create_task(sample_rss())
    results = await asyncio.gather(*clients(port))
    stop.set()
    await asyncio.gather(probe, sampler)
    statuses = sorted({status for status, _ in results})
    held = [seconds for _, seconds in results]
    return {
        "answer": ", ".join(f"{s} ×{sum(r[0] == s for r in results)}" for s in statuses),
        "held": f"{statistics.median(held):.1f} s (max {max(held):.1f} s)",
        "liveness": f"{statistics.median(latencies) * 1000:.1f} / {max(latencies) * 1000:.1f} ms",
        "rss": f"{peak[0]:.0f} → {max(peak):.0f} MB",
    }


SCENARIOS: dict[str, Callable[[int], list[Awaitable[tuple]]]] = {
    "one 64 MB header": lambda port: [_held(port, HEAD + b"X-Big: " + b"a" * (64 << 20))],
    f"{MANY:,} unfinished heads (slowloris)": lambda port: [
        _held(port, HEAD + b"X-Slow: 1\r\n") for _ in range(MANY)
    ],
    f"{MANY:,} unfinished bodies": lambda port: [
        _held(port, BODY_HEAD + b"{") for _ in range(MANY)
    ],
    "a body at 1 byte / 2 s": lambda port: [_held(port, BODY_HEAD, b" ", 2.0)],
    f"{MANY:,} silent connections": lambda port: [_held(port, b"") for _ in range(MANY)],
}


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        repo = make_repository(Path(tmp) / "repo")
        log = Path(tmp) / "server.log"
        with server_process(repo, log, {"PLSTM_WARMUP": "false"}) as (base, proc):
            for name, clients in SCENARIOS.items():
                rows.append((name, asyncio.run(scenario(base, proc.pid, clients))))
    print("`plstm serve` with the default limits; liveness: median / max latency of")
    print(
        "`GET /v2/health/live` every 0.1 s during the scenario; rss: the server's before → peak\n"
    )
    print("| scenario | answer | connection held | liveness | server RSS |")
    print("|---|---|---|---|---|")
    for name, row in rows:
        print(f"| {name} | {row['answer']} | {row['held']} | {row['liveness']} | {row['rss']} |")


if __name__ == "__main__":
    main()
