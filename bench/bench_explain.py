"""Explanation cost on the CPU: POST /v1/models/{name}/explain of the shipped models against
classify / predict of the same inputs, through the app in this process.

Run from the repository root, on as many cores as the target machine has::

    taskset -c 0,1 python3 bench/bench_explain.py --threads 2 --out docs/benchmarks

The app (``create_app``, device cpu, warm-up on) serves ``model_repository/``; the cases are
sent in rounds, each case once per round (``--warmup`` rounds, then ``--repeats`` measured), so
that a change of the machine's load slows all of them alike: the median and the 90th
percentile of the server's ``timings.total_ms`` (request received → answer) and of its
``inference_ms`` (the model call: for explanations the forward and backward pass of steps + 1
inputs). A markdown table goes to stdout and ``<out>/explain_cpu.md``, every sample to
``<out>/explain_cpu.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
from fastapi.testclient import TestClient

from app.core.settings import Settings
from app.main import create_app

ROOT = Path(__file__).resolve().parents[1]
ARROW_96 = (ROOT / "examples" / "arrow-pointing.png").read_bytes()
ARROW_192 = (ROOT / "examples" / "arrow-not-pointing-192px.png").read_bytes()
ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"
PNG = {"content-type": "image/png"}

CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("arrow 96 px: classify", "/v1/models/arrow-pointing/classify", {"content": ARROW_96}),
    ("arrow 96 px: explain", "/v1/models/arrow-pointing/explain", {"content": ARROW_96}),
    (
        "arrow 96 px: explain, steps 16",
        "/v1/models/arrow-pointing/explain?steps=16",
        {"content": ARROW_96},
    ),
    (
        "arrow 192 px native: classify",
        "/v1/models/arrow-pointing/classify?resize=native",
        {"content": ARROW_192},
    ),
    (
        "arrow 192 px native: explain",
        "/v1/models/arrow-pointing/explain?resize=native",
        {"content": ARROW_192},
    ),
    (
        "aspirin: predict",
        "/v1/models/solubility/predict",
        {"json": {"graphs": [{"smiles": ASPIRIN}]}},
    ),
    ("aspirin: explain (+ SVG)", "/v1/models/solubility/explain", {"json": {"smiles": ASPIRIN}}),
    (
        "aspirin: explain, steps 16",
        "/v1/models/solubility/explain?steps=16",
        {"json": {"smiles": ASPIRIN}},
    ),
]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def send(client: TestClient, url: str, kwargs: dict[str, Any]) -> dict[str, float]:
    """One request; the server's timings of it."""
    headers = PNG if "content" in kwargs else {}
    response = client.post(url, headers=headers, **kwargs)
    response.raise_for_status()
    return response.json()["timings"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench_out")))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = Settings(model_repository=ROOT / "model_repository", device="cpu")
    samples: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in CASES}
    with TestClient(create_app(settings)) as client:
        # round by round, every case once per round: a machine whose load changes meanwhile
        # slows every case alike, so the cases stay comparable
        for round_ in range(args.warmup + args.repeats):
            for name, url, kwargs in CASES:
                timings = send(client, url, kwargs)
                if round_ >= args.warmup:
                    samples[name].append(timings)
    rows, results = [], []
    for name, url, _ in CASES:
        total = [s["total_ms"] for s in samples[name]]
        inference = [s["inference_ms"] for s in samples[name]]
        results.append({"case": name, "url": url, "timings": samples[name]})
        rows.append(
            f"| {name} | {statistics.median(total):.1f} | {_percentile(total, 0.9):.1f} "
            f"| {statistics.median(inference):.1f} |"
        )
    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, "
        f"affinity {sorted(os.sched_getaffinity(0))}, torch {torch.__version__} with "
        f"{args.threads} threads, Python {platform.python_version()}, load average "
        f"{os.getloadavg()[0]:.1f} at the end"
    )
    table = "\n".join(
        [
            "| case | total ms (median) | total ms (p90) | inference ms (median) |",
            "|---|---|---|---|",
            *rows,
        ]
    )
    print(machine)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python3 bench/bench_explain.py", *sys.argv[1:]])
    (args.out / "explain_cpu.md").write_text(
        f"# Explanation cost on a CPU\n\n`{command}` (repository root, `PYTHONPATH=$PWD`)\n\n"
        f"{machine}\n\n{table}\n"
    )
    (args.out / "explain_cpu.json").write_text(
        json.dumps(
            {"machine": machine, "args": vars(args) | {"out": str(args.out)}, "results": results},
            indent=1,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
