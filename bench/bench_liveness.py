"""Liveness latency while one heavy request is decoded: ``/v2/health/live`` p50 / max.

Run from the repository root::

    python3 bench/bench_liveness.py                      # shipped models, default settings
    python3 bench/bench_liveness.py --cases smiles-30k infer-largest
    python3 bench/bench_liveness.py --source /tmp/old    # the server of another source tree

A ``python -m app.cli serve`` subprocess (default settings but the log level, the models of
``--repository``, on CPU unless ``--device``) gets one case at a time: a prober thread asks
``/v2/health/live`` every ``--probe-ms`` on its own keep-alive connection while the main
thread sends the case's request. A probe's latency is counted from when it was due (the
previous answer plus the interval), so a stalled server delays it in full. Cases:

- ``idle``: no request, the probes alone (``--idle-s`` seconds);
- ``predict-chains``: the largest typical legal predict request, 64 SMILES of 500 carbons;
- ``predict-cage``: the costliest legal molecule found, one 490-atom sulfur grid (7x7x10,
  1281 bonds) whose ring perception takes RDKit about a second in one call; both on
  ``path=recurrent``, as the parallel path computes them for minutes on a CPU (bounding that
  is the cost model's job; this benchmark is about decoding);
- ``infer-largest``: the largest legal infer body, arrow-pointing FP32 images of 96x96 with
  full-precision values, as many as fit in 16 MiB (``PLSTM_MAX_BODY_BYTES``);
- the cost reproducers of issue 11, refused by the cost limits before anything is decoded or
  queued: ``png-768-native`` (a white 768 px PNG with ``resize=native&path=parallel``: 96x96
  patches), ``png-4000-native`` (a 4000 px PNG with ``resize=native``), ``infer-1024-parallel``
  (a UINT8 1024 px image through ``/v2/.../infer`` with ``path=parallel``); and
  ``png-768-native-auto``, the 768 px PNG with ``path=auto``, which runs on a path that fits;
- the decoding reproducers of issue 11, all refused: ``smiles-30k`` and ``smiles-100k`` (SMILES of
  30,000 / 100,000 carbons), ``atoms-1m-h`` (one carbon and a million listed hydrogens),
  ``infer-deep`` (a body nested 10,000 levels), ``infer-3e38`` (a 15 MB body of FP32 values
  3e38), ``infer-nan`` (the same with NaN).

The server's peak resident memory (``VmHWM``) is read after every case. After each case the next
waits until liveness answers again. Then (unless
``--no-strategies``) the two costliest legal decodings run in this process on its event loop,
in a worker thread and in a decoder process, to show where the GIL is held (this part imports
the server's code from this repository). A markdown table goes to stdout
and ``<out>/liveness.md``, every number to ``<out>/liveness.json`` and the server's log to
``<out>/server.log``; ``<out>`` is ``--out``, else ``$OUT``, else ``./bench_out``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))
MAX_BODY = 16 * 1024 * 1024
ARROW = "arrow-pointing"
SOLUBILITY = "solubility"
PREDICT = f"/v1/models/{SOLUBILITY}/predict"
RECURRENT = f"{PREDICT}?path=recurrent"
CLASSIFY = f"/v1/models/{ARROW}/classify"


@dataclass(frozen=True)
class Case:
    """One heavy request: ``body`` is built when the case runs."""

    name: str
    what: str
    url: str
    body: Callable[[], bytes]
    expected: int
    content_type: str = "application/json"


def _json(document: Any) -> bytes:
    return json.dumps(document).encode()


def _cage(nx: int, ny: int, nz: int) -> dict[str, list]:
    """A sulfur grid as atoms / bonds: valid (S takes 6 bonds), slow to ring-perceive."""
    index = {(i, j, k): n for n, (i, j, k) in enumerate(np.ndindex(nx, ny, nz))}
    bonds = []
    for (i, j, k), a in index.items():
        for di, dj, dk in ((1, 0, 0), (0, 1, 0), (0, 0, 1)):
            b = index.get((i + di, j + dj, k + dk))
            if b is not None:
                bonds.append([a, b, 1])
    return {"atoms": ["S"] * len(index), "bonds": bonds}


def _images_body(fill: float | None, max_bytes: int = MAX_BODY) -> bytes:
    """arrow-pointing FP32 images ``[N,3,96,96]``: random full-precision values in [0, 1)
    (``fill`` None) or all ``fill``, as many images as fit in ``max_bytes``."""
    per_image = 3 * 96 * 96
    rng = np.random.default_rng(0)
    sample = rng.random(per_image) if fill is None else np.full(per_image, fill)
    images = int(0.97 * max_bytes / len(json.dumps(sample.tolist())))
    values = rng.random(images * per_image) if fill is None else np.full(images * per_image, fill)
    tensor = {"name": "images", "datatype": "FP32", "shape": [images, 3, 96, 96]}
    return json.dumps({"inputs": [{**tensor, "data": values.tolist()}]}).encode()


def _png(side: int) -> bytes:
    """A white PNG of ``side`` x ``side`` pixels (a few KiB)."""
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), "white").save(buffer, format="PNG")
    return buffer.getvalue()


def _uint8_image_body(side: int) -> bytes:
    tensor = {"name": "images", "datatype": "UINT8", "shape": [1, side, side, 3]}
    data = [255] * (side * side * 3)
    return _json({"inputs": [{**tensor, "data": data}], "parameters": {"path": "parallel"}})


def _nan_body() -> bytes:
    body = _images_body(0.5, 15 * 1024 * 1024)
    return body.replace(b"0.5", b"NaN")


CASES = [
    Case("predict-chains", "64 SMILES of 500 carbons (legal)", RECURRENT,
         lambda: _json({"graphs": [{"smiles": "C" * 500}] * 64}), 200),
    Case("predict-cage", "one 490-atom sulfur grid, 1281 bonds (legal)", RECURRENT,
         lambda: _json({"graphs": [_cage(7, 7, 10)]}), 200),
    Case("infer-largest", "16 MiB of FP32 96x96 images (legal)", f"/v2/models/{ARROW}/infer",
         lambda: _images_body(None), 200),
    Case("png-768-native", "white 768 px PNG, resize=native, path=parallel",
         f"{CLASSIFY}?resize=native&path=parallel", lambda: _png(768), 413, "image/png"),
    Case("png-768-native-auto", "white 768 px PNG, resize=native (legal)",
         f"{CLASSIFY}?resize=native", lambda: _png(768), 200, "image/png"),
    Case("png-4000-native", "white 4000 px PNG, resize=native", f"{CLASSIFY}?resize=native",
         lambda: _png(4000), 413, "image/png"),
    Case("infer-1024-parallel", "UINT8 1024 px image, path=parallel",
         f"/v2/models/{ARROW}/infer", lambda: _uint8_image_body(1024), 413),
    Case("smiles-30k", "SMILES of 30,000 carbons", PREDICT,
         lambda: _json({"graphs": [{"smiles": "C" * 30_000}]}), 422),
    Case("smiles-100k", "SMILES of 100,000 carbons", PREDICT,
         lambda: _json({"graphs": [{"smiles": "C" * 100_000}]}), 422),
    Case("atoms-1m-h", "1 carbon + 1,000,000 hydrogen atoms", PREDICT,
         lambda: _json({"graphs": [{"atoms": ["C"] + ["H"] * 1_000_000}]}), 422),
    Case("infer-deep", "body nested 10,000 levels", f"/v2/models/{ARROW}/infer",
         lambda: b'{"inputs": ' + b"[" * 10_000 + b"]" * 10_000 + b"}", 400),
    Case("infer-3e38", "15 MiB of FP32 values 3e38", f"/v2/models/{ARROW}/infer",
         lambda: _images_body(3e38, 15 * 1024 * 1024), 422),
    Case("infer-nan", "15 MiB of FP32 NaN", f"/v2/models/{ARROW}/infer", _nan_body, 422),
]  # fmt: skip
CASE_NAMES = ["idle", *(case.name for case in CASES)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_server(
    source: Path, repository: Path, device: str, log: Path, start_timeout_s: float
) -> Iterator[tuple[str, int]]:
    """``python -m app.cli serve`` of ``source`` on a free port until ready; yields its URL and
    process id."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLSTM_")}
    env.update(
        PYTHONPATH=str(source),
        PLSTM_MODEL_REPOSITORY=str(repository),
        PLSTM_DEVICE=device,
        PLSTM_LOG_LEVEL="warning",
    )
    command = [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("w") as out:
        server = subprocess.Popen(command, cwd=source, env=env, stdout=out, stderr=out)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + start_timeout_s
            while True:
                if server.poll() is not None:
                    raise RuntimeError(f"the server exited with {server.returncode}: see {log}")
                try:
                    if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the server was not ready in {start_timeout_s} s")
                time.sleep(0.5)
            yield url, server.pid
        finally:
            server.terminate()
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


class Prober(threading.Thread):
    """Asks ``/v2/health/live`` every ``interval_s`` until stopped; latencies in seconds from
    when each probe was due; probes unanswered within ``timeout_s`` count as that long."""

    def __init__(self, url: str, interval_s: float, timeout_s: float) -> None:
        super().__init__(daemon=True)
        self.url, self.interval_s, self.timeout_s = url, interval_s, timeout_s
        self.latencies: list[float] = []
        self.answered_at: list[float] = []
        self.failures = 0
        self._halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=self.timeout_s) as client:
            due = time.perf_counter()
            while not self._halt.is_set():
                try:
                    ok = client.get("/v2/health/live").status_code == 200
                except httpx.HTTPError:
                    ok = False
                answered = time.perf_counter()
                self.latencies.append(answered - due)
                self.answered_at.append(answered)
                self.failures += not ok
                due = time.perf_counter() + self.interval_s
                self._halt.wait(self.interval_s)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def wait_until_live(url: str, timeout_s: float) -> float:
    """Seconds until liveness answers within 100 ms again."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        try:
            t = time.perf_counter()
            httpx.get(f"{url}/v2/health/live", timeout=timeout_s)
            if time.perf_counter() - t < 0.1:
                break
        except httpx.HTTPError:
            pass
    return time.monotonic() - start


def _shown(path: Path) -> str:
    """``path`` as the results record it: relative to this checkout when inside it (no
    machine-specific prefix in committed files), else as given."""
    resolved = path.resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(path)


def peak_rss_mib(pid: int) -> float | None:
    """The peak resident memory of process ``pid`` so far (MiB; None where /proc lacks it)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def run_case(url: str, pid: int, case: Case | None, args: argparse.Namespace) -> dict[str, Any]:
    body = b"" if case is None else case.body()
    prober = Prober(url, args.probe_ms / 1000, args.request_timeout_s)
    prober.start()
    time.sleep(0.2)  # a few probes before the request
    status: int | str = "-"
    error = ""
    start = time.perf_counter()
    if case is None:
        time.sleep(args.idle_s)
    else:
        try:
            response = httpx.post(
                url + case.url,
                content=body,
                headers={"content-type": case.content_type},
                timeout=args.request_timeout_s,
            )
            status = response.status_code
            error = response.json().get("error", "") if status != 200 else ""
        except httpx.TimeoutException:
            status, error = "timeout", f"no answer in {args.request_timeout_s} s"
    seconds = time.perf_counter() - start
    prober.stop()
    recovery = wait_until_live(url, args.request_timeout_s * 4)
    lat = sorted(prober.latencies)
    slowest = sorted(zip(prober.latencies, prober.answered_at, strict=True), reverse=True)[:5]
    return {
        "case": "idle" if case is None else case.name,
        "what": "probes alone" if case is None else case.what,
        "body_bytes": len(body),
        "status": status,
        "expected": None if case is None else case.expected,
        "error": error[:120],
        "request_s": round(seconds, 3),
        "probes": len(lat),
        "probe_failures": prober.failures,
        "live_p50_ms": round(1000 * statistics.median(lat), 1),
        "live_p99_ms": round(1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], 1),
        "live_max_ms": round(1000 * lat[-1], 1),
        "live_again_after_s": round(recovery, 2),
        "server_peak_rss_mib": peak_rss_mib(pid),
        "slowest_probes": [
            {"ms": round(1000 * ms, 1), "answered_at_s": round(at - start, 3)} for ms, at in slowest
        ],
    }


async def _loop_delay_during(work: Callable[[], Awaitable[Any]], probe_s: float) -> float:
    """Worst delay (s) of a coroutine that wakes every ``probe_s`` while ``work`` runs."""
    task = asyncio.ensure_future(work())
    worst, due = 0.0, time.perf_counter()
    while not task.done():
        await asyncio.sleep(0)
        worst = max(worst, time.perf_counter() - due)
        due = time.perf_counter() + probe_s
        await asyncio.sleep(probe_s)
    await task
    return worst


def compare_strategies(probe_s: float) -> list[dict[str, Any]]:
    """The two costliest legal decodings (``infer-largest``'s body, ``predict-cage``'s
    molecule) on this process's event loop, in a worker thread and in a decoder process:
    seconds and the worst event-loop delay. JSON parsing, pydantic and RDKit hold the GIL for
    a whole call, so the thread frees the loop no better than running inline."""
    import anyio.to_thread

    from app.api.body_decoding import decode_infer_request
    from app.api.molecules import graphs_from_request
    from app.api.schemas.v1 import MoleculeLimits, PredictRequest
    from app.serving.decoder_pool import decoder_pool

    body = _images_body(None)
    request = PredictRequest.model_validate({"graphs": [_cage(7, 7, 10)]})
    limits = MoleculeLimits.derived(64, 500)
    pool = decoder_pool()

    async def inline() -> Any:
        return decode_infer_request(body)

    strategies = [
        ("infer-largest", "event loop", inline),
        ("infer-largest", "worker thread",
         lambda: anyio.to_thread.run_sync(decode_infer_request, body)),
        ("infer-largest", "decoder process", lambda: pool.run(decode_infer_request, body)),
        ("predict-cage", "worker thread",
         lambda: anyio.to_thread.run_sync(graphs_from_request, request, limits)),
        ("predict-cage", "decoder process", lambda: pool.run(graphs_from_request, request, limits)),
    ]  # fmt: skip

    async def run() -> list[dict[str, Any]]:
        await pool.run(graphs_from_request, request, limits)  # start it, load RDKit and torch
        rows = []
        for case, where, work in strategies:
            start = time.perf_counter()
            worst = await _loop_delay_during(work, probe_s)
            rows.append({
                "case": case,
                "decoded_in": where,
                "seconds": round(time.perf_counter() - start, 3),
                "worst_loop_delay_ms": round(1000 * worst, 1),
            })  # fmt: skip
        return rows

    return asyncio.run(run())


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]  # fmt: skip
        cpu = names[0] if names else cpu
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def strategies_markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| decoding of | in | seconds | worst event-loop delay ms |",
        "|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['decoded_in']} | {r['seconds']:.2f} | "
            f"{r['worst_loop_delay_ms']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "| case | request | body | status | request s | probes | live p50 ms | p99 ms | max ms "
        "| server peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        size = (
            f"{r['body_bytes'] / 2**20:.1f} MiB"
            if r["body_bytes"] >= 2**20
            else (f"{r['body_bytes'] / 1024:.0f} KiB" if r["body_bytes"] else "-")
        )
        lines.append(
            f"| {r['case']} | {r['what']} | {size} | {r['status']} | {r['request_s']:.2f} | "
            f"{r['probes']} | {r['live_p50_ms']:.1f} | {r['live_p99_ms']:.1f} | "
            f"{r['live_max_ms']:.1f} | {r.get('server_peak_rss_mib', '-')} |"
        )
    header = (
        f"Liveness while one request is handled: `{meta['command']}`\n\n"
        f"Server: `{meta['source']}` (commit {meta['commit']}), models `{meta['repository']}` "
        f"on {meta['device']}, default settings; {meta['machine']['cores']} cores "
        f"({meta['machine']['cpu']}, load average {meta['machine']['load_average_1min']} at "
        f"the start), Python {meta['machine']['python']}; {meta['date']}. "
        f"A probe every {meta['probe_ms']} ms, latency from when it was due.\n\n"
    )
    return header + "\n".join(lines) + "\n"


def _commit(source: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=ROOT, help="source tree of the server")
    parser.add_argument("--commit", help="commit of --source to report (default: from git)")
    parser.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cases", nargs="+", choices=CASE_NAMES, default=CASE_NAMES)
    parser.add_argument("--probe-ms", type=float, default=10.0)
    parser.add_argument("--idle-s", type=float, default=3.0)
    parser.add_argument("--request-timeout-s", type=float, default=120.0)
    parser.add_argument("--start-timeout-s", type=float, default=300.0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--no-strategies", action="store_true", help="skip the in-process decoding comparison"
    )
    args = parser.parse_args()
    out = args.out or Path(os.environ.get("OUT", "bench_out"))
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "command": "python3 bench/bench_liveness.py " + " ".join(sys.argv[1:]),
        "source": _shown(args.source),
        "commit": args.commit or _commit(args.source),
        "repository": _shown(args.repository),
        "device": args.device,
        "probe_ms": args.probe_ms,
        "machine": machine(),
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    by_name = {case.name: case for case in CASES}
    rows = []
    with running_server(
        args.source, args.repository.resolve(), args.device, out / "server.log",
        args.start_timeout_s,
    ) as (url, pid):  # fmt: skip
        for name in args.cases:
            row = run_case(url, pid, by_name.get(name), args)
            print(json.dumps(row), flush=True)
            rows.append(row)
    text = markdown(rows, meta)
    strategies = [] if args.no_strategies else compare_strategies(args.probe_ms / 1000)
    if strategies:
        text += (
            "\nWhere the decoding runs (`compare_strategies`, in the benchmark's own process: a "
            f"coroutine waking every {args.probe_ms:g} ms stands for the event loop):\n\n"
        ) + strategies_markdown(strategies)
    print(text)
    (out / "liveness.md").write_text(text)
    document = {"meta": meta, "rows": rows, "strategies": strategies}
    (out / "liveness.json").write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
