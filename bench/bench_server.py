"""Model-server benchmark: `plstm serve` (dynamic batching) vs a naive server vs the raw model.

Run from the repository root::

    python3 bench/bench_server.py                 # model_repository/arrow-pointing, GPU if any
    python3 bench/bench_server.py --quick         # tiny random PLSTMVision, < 1 min on a CPU
    python3 bench/bench_server.py --checkpoint DIR --concurrency 1 16 64 --seconds 10

``--checkpoint`` is a checkpoint directory, a version directory holding one, or a model
directory of a repository (``<model>/<version>/``; its highest version is used). The chosen
checkpoint is linked into a temporary one-model repository, so both servers load exactly it.
For every concurrency N (default 1, 16, 64):

- **served**: ``python3 -m app.cli serve`` as a subprocess on a free port (dynamic batching,
  ``PLSTM_MAX_BATCH_SIZE`` = max(64, largest N), ``PLSTM_MAX_DELAY_MS`` = ``--max-delay-ms``,
  log level warning), loaded with N closed-loop keep-alive clients (``bench/load_client.py``:
  lean asyncio HTTP/1.1 connections, spread over ``--client-procs`` processes) posting PNG
  images of the model's native resolution as raw bodies to
  ``/v1/models/{name}/classify?path=...``; ``--warmup-s`` of warm-up, then ``--seconds``
  measured: requests/s and p50 / p99 latency, and from the
  server's ``/metrics`` the batches it ran, their mean size and model-call time, and the mean
  queueing time. ``--workers`` and ``--engine`` are passed on to ``plstm serve``: with an
  engine process those numbers are the engine's, across all workers.
- **naive**: the same checkpoint behind ``bench/naive_server.py`` (same loading, decoding and
  model call, each request alone), same load.
- **raw**: the model called in this process on preprocessed tensors already on the device
  (same dtype, no autocast — as the server runs it), batch size N, synchronised timing:
  samples/s and the median batch latency. The JSON also holds the time of the server's own
  batch call (``app.serving.backends.run_images``: host→device copy, forward, copy back).

Before loading them, one image is classified by each server and compared with the raw model's
probabilities (``check`` in the JSON). A markdown table goes to stdout and
``<out>/bench_server.md``, every number to ``<out>/bench_server.json`` and the servers' logs to
``<out>/served.log`` and ``<out>/naive.log``. ``<out>`` is ``--out``, else ``$OUT``, else
``./bench_out``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from prometheus_client.parser import text_string_to_metric_families

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # run as a script from a checkout without `pip install -e .`
    sys.path.insert(0, str(_ROOT))

from app.serving import backends  # noqa: E402
from app.serving.backends import image_tokens  # noqa: E402
from app.serving.cuda_graphs import InferenceGraphs  # noqa: E402
from app.serving.images import ImageSpec, load_image  # noqa: E402
from app.serving.repository import ModelEntry, ModelRepository, resolve_device  # noqa: E402
from models.capabilities import use_method  # noqa: E402
from models.checkpoint import CONFIG_FILE, save_checkpoint  # noqa: E402
from models.image_spec import grayscale_image_spec  # noqa: E402
from models.registry import create_model  # noqa: E402

LOAD_CLIENT = _ROOT / "bench" / "load_client.py"
NAIVE_SERVER = _ROOT / "bench" / "naive_server.py"
DEFAULT_CHECKPOINT = _ROOT / "model_repository" / "arrow-pointing"
NUM_IMAGES = 16
CLIENT_STARTUP_S = 1.5
"""Time the client processes get to start before the warm-up's end is computed from."""
CHECK_TOLERANCE = 1e-3
"""Largest difference of a served probability from the raw model's (batch sizes and devices
change the float rounding, nothing more)."""


# ------------------------------------------------------------------ checkpoint and images


def find_checkpoint(path: Path) -> Path:
    """The checkpoint directory of ``path``: itself, its only child checkpoint, or (a model
    directory) that of its highest numbered version. ValueError naming what is there."""
    if (path / CONFIG_FILE).is_file():
        return path
    if not path.is_dir():
        raise ValueError(f"{path} is not a directory")
    children = sorted(p for p in path.iterdir() if (p / CONFIG_FILE).is_file())
    if len(children) == 1:
        return children[0]
    versions = sorted((int(p.name), p) for p in path.iterdir() if p.name.isdigit() and p.is_dir())
    if versions:
        return find_checkpoint(versions[-1][1])
    raise ValueError(f"{path}: no checkpoint ({CONFIG_FILE}) and no version directories")


def _shown(path: Path) -> str:
    """``path`` relative to the checkout when it lies inside it."""
    path = path.resolve()
    return str(path.relative_to(_ROOT)) if path.is_relative_to(_ROOT) else str(path)


def model_name(path: Path) -> str:
    """The served name for a ``--checkpoint`` path: the model directory's name."""
    path = path.resolve()
    if (path / CONFIG_FILE).is_file() and path.parent.name.isdigit():
        path = path.parent  # <model>/<version>/<checkpoint>
    while path.name.isdigit():
        path = path.parent
    return re.sub(r"[^A-Za-z0-9_.-]", "-", path.name).lstrip("-_.") or "model"


def quick_checkpoint(directory: Path) -> Path:
    """A tiny random PLSTMVision classifier (32 px grayscale, patch 8) saved to
    ``directory``."""
    torch.manual_seed(0)
    size, patch = 32, 8
    model = create_model(
        "plstm_vis_t",
        img_size=size,
        patch_size=patch,
        num_classes=2,
        dim=32,
        depth=2,
        num_heads=2,
    )
    input_spec, preprocessing = grayscale_image_spec(size, patch)
    save_checkpoint(
        model,
        directory,
        name="plstm_vis_t",
        labels=["not_pointing", "pointing"],
        input_spec=input_spec,
        preprocessing=preprocessing,
    )
    return directory


def one_model_repository(checkpoint: Path, root: Path, name: str) -> Path:
    """``root/<name>/1`` linked to ``checkpoint``: a repository serving exactly it."""
    (root / name).mkdir(parents=True)
    (root / name / "1").symlink_to(checkpoint.resolve(), target_is_directory=True)
    return root


def png_images(spec: ImageSpec, count: int, directory: Path) -> list[Path]:
    """``count`` random PNGs of the model's native size and colour, written to
    ``directory``."""
    from PIL import Image

    rng = np.random.default_rng(0)
    files = []
    for i in range(count):
        shape = (spec.height, spec.width) if spec.grayscale else (spec.height, spec.width, 3)
        pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
        file = directory / f"image_{i}.png"
        Image.fromarray(pixels, mode="L" if spec.grayscale else "RGB").save(file, format="PNG")
        files.append(file)
    return files


# ------------------------------------------------------------------------------ raw model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_calls(fn: Callable[[], Any], device: torch.device, warmup: int, reps: int) -> list[float]:
    """Seconds of each of ``reps`` synchronised calls of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def load_entry(repository: Path, name: str, device: str) -> ModelEntry:
    """Model ``name`` loaded (and warmed up) as the server loads it."""
    models = ModelRepository(repository, device)
    models.load_all()
    entry = models.get(name)
    if not entry.ready or entry.model is None:
        raise SystemExit(f"model {name!r} did not load: {entry.reason}")
    return entry


def measure_raw(
    entry: ModelEntry,
    tensors: Sequence[torch.Tensor],
    path: str,
    concurrencies: Sequence[int],
    warmup: int,
    reps: int,
) -> dict[int, dict[str, float]]:
    """Per batch size N: the forward on device-resident inputs (``batch_ms`` median,
    ``batch_p99_ms``, ``samples_per_s``) and the server's batch call ``run_images``
    (``run_images_ms``)."""
    model = entry.model
    assert model is not None
    dtype = next(model.parameters()).dtype
    results: dict[int, dict[str, float]] = {}
    for n in concurrencies:
        batch = torch.stack([tensors[i % len(tensors)] for i in range(n)])
        x = batch.to(entry.device, dtype=dtype)

        def forward(x: torch.Tensor = x) -> torch.Tensor:
            with entry.lock, torch.inference_mode():
                use_method(model, path)
                return model(x)

        def server_call(batch: torch.Tensor = batch) -> torch.Tensor:
            return backends.run_images(entry, batch, path)

        times = _time_calls(forward, entry.device, warmup, reps)
        kind = "eager"
        if entry.device.type == "cuda":  # the best the model can do: its CUDA-graph replay
            graphs = InferenceGraphs(max_batch=max(concurrencies))
            tokens = int(image_tokens(entry, x.shape[2], x.shape[3]))

            def replay(
                x: torch.Tensor = x, graphs: InferenceGraphs = graphs, tokens: int = tokens
            ) -> torch.Tensor:
                with entry.lock, torch.inference_mode():
                    return graphs(model, x, tokens, key=path)

            graph_times = _time_calls(replay, entry.device, warmup, reps)
            if statistics.median(graph_times) < statistics.median(times):
                times, kind = graph_times, "cuda_graph"
        copies = _time_calls(server_call, entry.device, warmup, reps)
        median = statistics.median(times)
        results[n] = {
            "batch_ms": 1e3 * median,
            "batch_p99_ms": 1e3 * float(np.percentile(times, 99)),
            "samples_per_s": n / median,
            "raw_kind": kind,
            "run_images_ms": 1e3 * statistics.median(copies),
            "reps": reps,
        }
        print(f"raw  N={n:3d}: {results[n]}", flush=True)
    return results


def raw_probabilities(entry: ModelEntry, tensor: torch.Tensor, path: str) -> list[float]:
    """The model's class probabilities for one preprocessed image."""
    return backends.run_images(entry, tensor[None], path)[0].softmax(-1).tolist()


# ---------------------------------------------------------------------------- the servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(
    command: list[str], env: dict[str, str], ready_url: str, log_path: Path, timeout_s: float
) -> Iterator[subprocess.Popen]:
    """Start ``command``, wait until ``ready_url`` answers 200, yield; then SIGTERM (kill
    after 60 s). RuntimeError with the log's tail when it never gets ready."""
    with log_path.open("w") as log:
        proc = subprocess.Popen(command, cwd=_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    tail = log_path.read_text()[-3000:]
                    raise RuntimeError(f"{command[:4]} did not get ready:\n{tail}")
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(ready_url, timeout=2).status_code == 200:
                        break
                time.sleep(0.25)
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)


def server_env(extra: dict[str, str]) -> dict[str, str]:
    """This environment with the checkout on PYTHONPATH, no API key, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k != "PLSTM_API_KEY"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_ROOT), env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


def server_totals(base: str, name: str) -> dict[str, float]:
    """Running totals of model ``name`` from the server's /metrics: batches and the requests
    in them, seconds of model calls, requests queued and their seconds of queueing."""
    wanted = {
        "plstm_batch_size_count": "batches",
        "plstm_batch_size_sum": "batched_requests",
        "plstm_inference_duration_seconds_sum": "inference_s",
        "plstm_queue_duration_seconds_count": "queued_requests",
        "plstm_queue_duration_seconds_sum": "queue_s",
    }
    totals = dict.fromkeys(wanted.values(), 0.0)
    text = httpx.get(f"{base}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in wanted and sample.labels.get("model") == name:
                totals[wanted[sample.name]] += sample.value
    return totals


def batching_stats(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """What the server's batcher did between two :func:`server_totals` (a whole level,
    warm-up included): batches, mean batch size, mean model time per batch and mean queueing
    time per request."""
    d = {key: after[key] - before[key] for key in before}
    batches, queued = d["batches"], d["queued_requests"]
    return {
        "batches": batches,
        "mean_batch_size": d["batched_requests"] / batches if batches else None,
        "mean_inference_ms": 1e3 * d["inference_s"] / batches if batches else None,
        "mean_queue_ms": 1e3 * d["queue_s"] / queued if queued else None,
    }


def check_answer(url: str, image: bytes, expected: list[float]) -> dict[str, Any]:
    """POST one image; compare the answered probabilities with ``expected``."""
    response = httpx.post(url, content=image, headers={"content-type": "image/png"}, timeout=60)
    if response.status_code != 200:
        return {"ok": False, "status": response.status_code, "body": response.text[:500]}
    got = {p["index"]: p["probability"] for p in response.json()["predictions"]}
    diff = max(abs(got[i] - expected[i]) for i in got)
    return {"ok": diff <= CHECK_TOLERANCE, "max_abs_diff": diff}


def run_load(
    url: str, images: Sequence[Path], concurrency: int, procs: int, warmup_s: float, seconds: float
) -> dict[str, Any]:
    """N closed-loop clients over ``procs`` processes: throughput and latency percentiles."""
    procs = max(1, min(procs, concurrency))
    shares = [concurrency // procs + (i < concurrency % procs) for i in range(procs)]
    start = time.time() + CLIENT_STARTUP_S + warmup_s
    end = start + seconds
    window = ["--start", repr(start), "--end", repr(end), "--url", url, *map(str, images)]
    children = [
        subprocess.Popen(
            [sys.executable, str(LOAD_CLIENT), "--concurrency", str(share), *window],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for share in shares
    ]
    completed, latencies, errors, first_error = 0, [], {}, None
    server_ms: dict[str, list[float]] = {}
    for child in children:
        out, err = child.communicate(timeout=end - time.time() + 300)
        if child.returncode != 0:
            raise RuntimeError(f"load client failed ({child.returncode}):\n{err[-3000:]}")
        record = json.loads(out)
        completed += record["completed"]
        latencies += record["latencies_s"]
        for key, count in record["errors"].items():
            errors[key] = errors.get(key, 0) + count
        first_error = first_error or record["first_error"]
        for key, value in record.get("server_ms_p50", {}).items():
            server_ms.setdefault(key, []).append(value)
    result: dict[str, Any] = {
        "concurrency": concurrency,
        "client_procs": procs,
        "seconds": seconds,
        "completed": completed,
        "req_per_s": completed / seconds,
        "latency_samples": len(latencies),
        "errors": errors,
        "first_error": first_error,
        # medians of the timings the server reports per answer (a median of the client
        # processes' medians); empty for the naive server
        "server_ms_p50": {k: statistics.median(v) for k, v in server_ms.items()},
    }
    if latencies:
        ms = 1e3 * np.asarray(latencies)
        result.update(
            p50_ms=float(np.percentile(ms, 50)),
            p99_ms=float(np.percentile(ms, 99)),
            mean_ms=float(ms.mean()),
        )
    return result


def measure_server(
    kind: str,
    command: list[str],
    env: dict[str, str],
    base: str,
    ready_path: str,
    args: argparse.Namespace,
    name: str,
    images: Sequence[Path],
    expected: list[float],
) -> dict[str, Any]:
    """Start one server, check one answer, then run every concurrency against it."""
    url = f"{base}/v1/models/{name}/classify?path={args.path}"
    log = args.out / f"{kind}.log"
    with running(command, env, base + ready_path, log, args.start_timeout_s):
        check = check_answer(url, images[0].read_bytes(), expected)
        print(f"{kind}: check {check}", flush=True)
        levels = []
        for n in args.concurrency:
            before = server_totals(base, name) if kind == "served" else None
            result = run_load(url, images, n, args.client_procs, args.warmup_s, args.seconds)
            if before is not None:
                result.update(batching_stats(before, server_totals(base, name)))
            print(f"{kind} N={n:3d}: { {k: v for k, v in result.items() if k != 'first_error'} }")
            levels.append(result)
    return {"check": check, "levels": levels}


# ------------------------------------------------------------------------------- report


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def report(results: dict[str, Any]) -> str:
    """The markdown report: header lines, the table, the added latency and the targets."""
    served = {lv["concurrency"]: lv for lv in results["served"]["levels"]}
    naive = {lv["concurrency"]: lv for lv in results["naive"]["levels"]}
    raw = results["raw"]
    meta = results["meta"]
    lines = [
        f"# Model server benchmark: {meta['model']} ({meta['architecture']})",
        "",
        f"- device: {meta['device_name']} (`{meta['device']}`), torch {meta['torch']}, "
        f"Python {meta['python']}",
        f"- command: `{meta['command']}`",
        f"- date: {meta['date']}",
        f"- checkpoint: `{meta['checkpoint']}`, input {meta['input']}, path `{meta['path']}`, "
        f"weights {meta['dtype']}",
        f"- served: `plstm serve --workers {meta.get('workers', 1)}"
        f"{' --engine ' + meta['engine'] if meta.get('engine_flag') else ''}` (engine "
        f"{meta.get('engine', 'inline')}; log level warning: no "
        "access log), max batch size "
        f"{meta['max_batch_size']}, max delay "
        f"{meta['max_delay_ms']} ms; load: closed-loop asyncio HTTP/1.1 clients, "
        f"{meta['warmup_s']} s "
        f"warm-up + {meta['seconds']} s measured per concurrency",
        "- raw: the faster of the eager forward and its CUDA-graph replay, on inputs already "
        "on the device (raw_kind in the JSON says which)",
        f"- answer check (one image vs the raw model): served {results['served']['check']}, "
        f"naive {results['naive']['check']}",
        "",
        "| concurrency | served req/s | served p50 ms | served p99 ms | mean batch | "
        "naive req/s | naive p50 ms | naive p99 ms | raw samples/s | raw batch ms | "
        "served/raw | served/naive |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in meta["concurrency"]:
        s, v, r = served[n], naive[n], raw[n]
        lines.append(
            f"| {n} | {_fmt(s['req_per_s'])} | {_fmt(s.get('p50_ms'), 2)} | "
            f"{_fmt(s.get('p99_ms'), 2)} | {_fmt(s.get('mean_batch_size'), 1)} | "
            f"{_fmt(v['req_per_s'])} | {_fmt(v.get('p50_ms'), 2)} | {_fmt(v.get('p99_ms'), 2)} | "
            f"{_fmt(r['samples_per_s'])} | {_fmt(r['batch_ms'], 3)} | "
            f"{_fmt(_ratio(s['req_per_s'], r['samples_per_s']), 2)} | "
            f"{_fmt(_ratio(s['req_per_s'], v['req_per_s']), 2)} |"
        )
    errors = {
        f"{kind} N={lv['concurrency']}": lv["errors"]
        for kind in ("served", "naive")
        for lv in results[kind]["levels"]
        if lv["errors"]
    }
    lines.append("")
    if errors:
        lines.append(f"Errors inside the measured windows: {errors}")
        lines.append("")
    lines += _targets(results, served, naive, raw)
    lines += [
        "",
        "Inside the served server (its /metrics over each whole level, warm-up included): "
        "batches run, mean model-call time per batch (`run_images`) and mean queueing time "
        "per request; for comparison the raw `run_images` time of a batch of N.",
        "",
        "| concurrency | batches | mean batch | model call ms / batch | queue ms / request | "
        "raw run_images ms (batch N) |",
        "|---|---|---|---|---|---|",
    ]
    for n in meta["concurrency"]:
        s = served[n]
        lines.append(
            f"| {n} | {_fmt(s.get('batches'), 0)} | {_fmt(s.get('mean_batch_size'), 1)} | "
            f"{_fmt(s.get('mean_inference_ms'), 2)} | {_fmt(s.get('mean_queue_ms'), 2)} | "
            f"{_fmt(raw[n]['run_images_ms'], 2)} |"
        )
    return "\n".join(lines) + "\n"


def _targets(results: dict[str, Any], served: dict, naive: dict, raw: dict) -> list[str]:
    lines = []
    if 1 in served and served[1].get("p50_ms") is not None:
        added = served[1]["p50_ms"] - raw[1]["batch_ms"]
        results["added_p50_ms_at_1"] = added
        lines.append(
            f"Added p50 latency at concurrency 1: {added:.2f} ms (served p50 "
            f"{served[1]['p50_ms']:.2f} ms - raw batch-1 latency {raw[1]['batch_ms']:.3f} ms); "
            f"target <= 2 ms: {'met' if added <= 2.0 else 'missed'}."
        )
        inside = served[1].get("server_ms_p50") or {}
        if {"queue_ms", "inference_ms", "total_ms"} <= inside.keys():
            lines.append(
                "Inside the server at concurrency 1 (p50 of the timings in its answers): queue "
                f"{inside['queue_ms']:.2f} ms, model call {inside['inference_ms']:.2f} ms, "
                f"handler in all {inside['total_ms']:.2f} ms; HTTP and client "
                f"{served[1]['p50_ms'] - inside['total_ms']:.2f} ms."
            )
    if 64 in served:
        to_raw = _ratio(served[64]["req_per_s"], raw[64]["samples_per_s"])
        to_naive = _ratio(served[64]["req_per_s"], naive[64]["req_per_s"])
        results["targets_at_64"] = {"served_over_raw": to_raw, "served_over_naive": to_naive}
        for what, value, goal in (("raw", to_raw, 0.8), ("naive", to_naive, 5.0)):
            verdict = "met" if value is not None and value >= goal else "missed"
            lines.append(
                f"Served / {what} throughput at concurrency 64: {_fmt(value, 2)}; "
                f"target >= {goal:g}: {verdict}."
            )
    return lines


# --------------------------------------------------------------------------------- main


def served_engine(args: argparse.Namespace) -> str:
    """Where the served models run: ``inline`` or ``process`` (``auto`` resolved as
    ``plstm serve`` resolves it: process when workers > 1)."""
    engine = args.engine or os.environ.get("PLSTM_ENGINE", "auto").strip().lower() or "auto"
    if engine == "auto":
        return "process" if args.workers > 1 else "inline"
    return engine


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--name", help="served model name (default: the model directory's)")
    parser.add_argument("--quick", action="store_true", help="tiny random model, short runs")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--seconds", type=float, help="measured seconds per level (10; quick 1.5)")
    parser.add_argument("--warmup-s", type=float, help="warm-up seconds per level (3; quick 0.5)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument(
        "--path",
        default="parallel",
        choices=("parallel", "recurrent", "chunkwise"),
        help="inference path, the same for the servers and the raw model (parallel is what "
        "path=auto picks for small images)",
    )
    parser.add_argument("--max-batch-size", type=int, help="served: default max(64, max N)")
    parser.add_argument(
        "--max-delay-ms", type=float, default=0.0, help="served batcher delay (server default 0)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="served: uvicorn worker processes (with --engine inline each has its own model "
        "copy and batcher, and the /metrics table covers the one worker that answered the "
        "scrape)",
    )
    parser.add_argument(
        "--engine",
        choices=("auto", "inline", "process"),
        help="served: passed to plstm serve --engine (default: the server's own, PLSTM_ENGINE "
        "or auto = process when workers > 1)",
    )
    parser.add_argument(
        "--client-procs",
        type=int,
        default=max(1, min(4, (os.cpu_count() or 1) // 4)),
        help="load-generating processes (each runs N/procs clients)",
    )
    parser.add_argument("--raw-reps", type=int, help="timed raw batches per size (30; quick 3)")
    parser.add_argument("--start-timeout-s", type=float, default=600.0)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "bench_out"))
    args = parser.parse_args(argv)
    if min(args.concurrency) < 1:
        parser.error("--concurrency values must be positive")
    args.seconds = args.seconds or (1.5 if args.quick else 10.0)
    args.warmup_s = args.warmup_s if args.warmup_s is not None else (0.5 if args.quick else 3.0)
    args.raw_reps = args.raw_reps or (3 if args.quick else 30)
    args.max_batch_size = args.max_batch_size or max(64, *args.concurrency)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    device_arg = device.type
    with tempfile.TemporaryDirectory(prefix="bench_server_") as tmp_name:
        tmp = Path(tmp_name)
        if args.quick:
            checkpoint, name = quick_checkpoint(tmp / "quick_checkpoint"), args.name or "quick"
        else:
            try:
                checkpoint = find_checkpoint(args.checkpoint)
            except ValueError as exc:
                raise SystemExit(f"--checkpoint: {exc}") from None
            name = args.name or model_name(args.checkpoint)
        repository = one_model_repository(checkpoint, tmp / "repository", name)
        args.out.mkdir(parents=True, exist_ok=True)
        (tmp / "images").mkdir()

        entry = load_entry(repository, name, device_arg)
        try:
            spec = ImageSpec.from_metadata(entry.input_spec, entry.preprocessing, entry.config)
        except ValueError as exc:
            raise SystemExit(f"{checkpoint} is not a usable image model: {exc}") from None
        images = png_images(spec, NUM_IMAGES, tmp / "images")
        tensors = [load_image(p.read_bytes(), spec).tensor for p in images]
        expected = raw_probabilities(entry, tensors[0], args.path)
        warmup = 1 if args.quick else 5
        raw = measure_raw(entry, tensors, args.path, args.concurrency, warmup, args.raw_reps)
        meta = {
            "model": name,
            "architecture": entry.architecture,
            "checkpoint": "quick (random weights)" if args.quick else _shown(checkpoint),
            "input": f"{spec.height}x{spec.width} {'grayscale' if spec.grayscale else 'RGB'} PNG",
            "dtype": str(next(entry.model.parameters()).dtype).removeprefix("torch."),
            "device": str(device),
            "device_name": (
                torch.cuda.get_device_name(device)
                if device.type == "cuda"
                else f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
            ),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "command": " ".join(["python3 bench/bench_server.py", *sys.argv[1:]]),
            "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "path": args.path,
            "concurrency": args.concurrency,
            "seconds": args.seconds,
            "warmup_s": args.warmup_s,
            "max_batch_size": args.max_batch_size,
            "max_delay_ms": args.max_delay_ms,
            "client_procs": args.client_procs,
            "workers": args.workers,
            "engine": served_engine(args),
            "engine_flag": args.engine is not None,
        }
        del entry  # free the device for the servers
        if device.type == "cuda":
            torch.cuda.empty_cache()

        port = free_port()
        served_env = server_env(
            {
                "PLSTM_MAX_BATCH_SIZE": str(args.max_batch_size),
                "PLSTM_MAX_DELAY_MS": str(args.max_delay_ms),
                "PLSTM_MAX_QUEUE_SIZE": str(max(256, 2 * max(args.concurrency))),
                "PLSTM_REQUEST_TIMEOUT_S": "120",
            }
        )
        served_cmd = [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1"]
        served_cmd += ["--port", str(port), "--model-repository", str(repository)]
        served_cmd += ["--device", device_arg, "--log-level", "warning"]
        served_cmd += ["--workers", str(args.workers)]
        if args.engine is not None:
            served_cmd += ["--engine", args.engine]
        served = measure_server(
            "served",
            served_cmd,
            served_env,
            f"http://127.0.0.1:{port}",
            "/v2/health/ready",
            args,
            name,
            images,
            expected,
        )
        port = free_port()
        naive_cmd = [sys.executable, str(NAIVE_SERVER), "--repository", str(repository)]
        naive_cmd += ["--name", name, "--port", str(port), "--device", device_arg]
        naive = measure_server(
            "naive",
            naive_cmd,
            server_env({}),
            f"http://127.0.0.1:{port}",
            "/ready",
            args,
            name,
            images,
            expected,
        )
    results: dict[str, Any] = {"meta": meta, "raw": raw, "served": served, "naive": naive}
    table = report(results)
    (args.out / "bench_server.md").write_text(table)
    (args.out / "bench_server.json").write_text(json.dumps(results, indent=1) + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
