"""Requests per second of the server's HTTP layer with each uvicorn protocol: stock httptools,
the hardened httptools subclass ``plstm serve`` runs (:mod:`app.api.http_protocol`) and h11.

Each protocol serves the app of ``plstm serve`` (tiny test models) on a free port in its own
process; a lean asyncio client keeps ``--connections`` keep-alive connections busy with
``GET /v2/health/live`` (no model work: the HTTP layer dominates) for ``--seconds`` after a
warm-up, in rounds that alternate the protocols. Prints a markdown table (median of the rounds)
of requests/s and of the server process's CPU time per request (user + system, from /proc):
the second is what the protocol costs, and varies less when other processes share the CPU.

    python bench/bench_http_protocol.py --rounds 3 --seconds 5 --connections 16
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.app.model_repo import make_repository  # noqa: E402
from tests.app.real_server import free_port  # noqa: E402

PROTOCOLS = {
    "httptools (stock)": "httptools",
    "httptools (hardened, plstm serve)": "app.api.http_protocol:HardenedHttpToolsProtocol",
    "h11 (stock)": "h11",
}
REQUEST = b"GET /v2/health/live HTTP/1.1\r\nHost: bench\r\n\r\n"


def start(protocol: str, repo: Path, port: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PLSTM_MODEL_REPOSITORY": str(repo),
        "PLSTM_DEVICE": "cpu",
        "PLSTM_WARMUP": "false",
        "PLSTM_LOG_LEVEL": "warning",
    }
    command = [sys.executable, "-m", "uvicorn", "app.cli:create_logged_app", "--factory"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--http", protocol]
    command += ["--no-access-log", "--log-level", "warning", "--ws", "none"]
    proc = subprocess.Popen(command, cwd=ROOT, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{protocol} did not start")


async def _connection(port: int, stop: float, counts: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < stop:
            writer.write(REQUEST)
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            counts[0] += 1
    finally:
        writer.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(port: int, connections: int, seconds: float) -> tuple[int, float]:
    """Requests answered in ``seconds``, and the seconds it took."""
    counts = [0]
    start_time = time.perf_counter()
    stop = start_time + seconds
    await asyncio.gather(*(_connection(port, stop, counts) for _ in range(connections)))
    return counts[0], time.perf_counter() - start_time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {name: [] for name in PROTOCOLS}
    cpu_us: dict[str, list[float]] = {name: [] for name in PROTOCOLS}
    with tempfile.TemporaryDirectory() as tmp:
        repo = make_repository(Path(tmp) / "repo")
        for _ in range(args.rounds):
            for name, protocol in PROTOCOLS.items():
                port = free_port()
                proc = start(protocol, repo, port)
                try:
                    asyncio.run(load(port, args.connections, 1.0))  # warm-up
                    cpu = cpu_seconds(proc.pid)
                    count, elapsed = asyncio.run(load(port, args.connections, args.seconds))
                    cpu_us[name].append((cpu_seconds(proc.pid) - cpu) / count * 1e6)
                    rates[name].append(count / elapsed)
                finally:
                    proc.terminate()
                    proc.wait(30)
    base = statistics.median(cpu_us["httptools (stock)"])
    print(f"`GET /v2/health/live`, {args.connections} keep-alive connections, median of")
    print(f"{args.rounds} rounds of {args.seconds:g} s\n")
    print("| protocol | requests/s | server CPU per request | vs stock httptools |")
    print("|---|---:|---:|---:|")
    for name in PROTOCOLS:
        rate, cost = statistics.median(rates[name]), statistics.median(cpu_us[name])
        print(f"| {name} | {rate:,.0f} | {cost:.0f} µs | {cost / base:.2f}x |")


if __name__ == "__main__":
    main()
