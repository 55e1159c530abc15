"""End-to-end latency of one molecule: ``POST /v1/models/solubility/predict`` with one SMILES,
one request at a time, against the model's own call on the same graph.

Starts ``python3 -m app.cli serve`` on the shipped repository (one inline worker, log level
warning, on the CPU unless ``--device``) and, after ``--warmup`` requests, times ``--requests``
sequential keep-alive requests (httpx). Then, in this process, the model is loaded as the
server loads it and ``app.serving.backends.run_graphs`` is timed on the same featurised
molecule the same number of times. Prints a markdown table: client p50 / p99 of the request,
the server's own timings from its answers (decode, queue, model call, total), and the model
call alone, so that the server's share is the difference.

Usage: python3 bench/bench_predict_latency.py [--smiles CCO] [--requests 300] [--threads 2]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import platform
import statistics
import sys
import time
from pathlib import Path

import httpx
import torch

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from app.serving import backends  # noqa: E402
from app.serving.repository import ModelRepository  # noqa: E402
from bench.bench_server import free_port, running, server_env  # noqa: E402
from models.molecule_features import featurize_smiles  # noqa: E402

MODEL = "solubility"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def served_ms(args: argparse.Namespace) -> tuple[list[float], list[dict[str, float]]]:
    """Client-side milliseconds of each timed request, and the server's timings of each."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", "1"]
    env = server_env(
        {
            "PLSTM_DEVICE": args.device,
            "PLSTM_LOG_LEVEL": "warning",
            "PLSTM_TORCH_THREADS": str(args.threads),
        }
    )
    body = {"graphs": [{"smiles": args.smiles}]}
    url = f"{base}/v1/models/{MODEL}/predict"
    with (
        running(command, env, f"{base}/v2/health/ready", args.log, 600.0),
        httpx.Client(timeout=30) as client,
    ):
        for _ in range(args.warmup):
            client.post(url, json=body).raise_for_status()
        elapsed, timings = [], []
        for _ in range(args.requests):
            start = time.perf_counter()
            response = client.post(url, json=body)
            elapsed.append(1e3 * (time.perf_counter() - start))
            response.raise_for_status()
            timings.append(response.json().get("timings", {}))
    return elapsed, timings


def model_ms(args: argparse.Namespace) -> list[float]:
    """Milliseconds of ``run_graphs`` on the featurised molecule, as the server calls it."""
    torch.set_num_threads(args.threads)
    repository = ModelRepository(_ROOT / "model_repository", args.device, warmup=False)
    repository.load_all()
    entry = next(e for e in repository.entries() if e.name == MODEL)
    graph = featurize_smiles(args.smiles)
    for _ in range(args.warmup):
        backends.run_graphs(entry, [graph], "auto")
    times = []
    for _ in range(args.requests):
        start = time.perf_counter()
        backends.run_graphs(entry, [graph], "auto")
        times.append(1e3 * (time.perf_counter() - start))
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smiles", default="CCO")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument(
        "--threads", type=int, default=2, help="torch threads of the server and of the model call"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--log", type=Path, default=Path("/tmp/bench_predict_latency.log"))
    args = parser.parse_args(argv)
    elapsed, timings = served_ms(args)
    model = model_ms(args)
    rows = [("request, client side", elapsed), ("model call alone (run_graphs)", model)]
    for key in sorted({k for t in timings for k in t}):
        rows.append((f"server's {key}", [t[key] for t in timings if key in t]))
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"# One SMILES ({args.smiles!r}) through `POST /v1/models/{MODEL}/predict`\n")
    print(
        f"{platform.processor() or platform.machine()}, {args.device}, {args.threads} torch "
        f"thread(s), torch {torch.__version__}; `python3 bench/bench_predict_latency.py "
        f"--requests {args.requests} --threads {args.threads}`; {now}; {args.requests} "
        f"sequential requests after {args.warmup} warm-up ones.\n"
    )
    print("| what | p50 ms | p99 ms | mean ms |\n|---|---|---|---|")
    for what, values in rows:
        print(
            f"| {what} | {_percentile(values, 0.5):.2f} | {_percentile(values, 0.99):.2f} | "
            f"{statistics.mean(values):.2f} |"
        )
    added = _percentile(elapsed, 0.5) - _percentile(model, 0.5)
    print(f"\nThe server's share at the median: {added:.2f} ms (target: the whole request ≤ 5 ms).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
