"""CPU latency of pLSTM-Vis-T against ViT-T (``bench/bench_vision.py --cpu``).

Batch 1, float32, inference mode, ``torch.set_num_threads(--threads)``, patch 8 (the arrow
models' set-up): 96, 192, 384 px (and 768 px with ``--large``), i.e. 12², 24², 48² (96²)
tokens. Rows: ``vit_t``; ``plstm_vis_t`` with every method on the CPU forms of
``plstm_core.ops.grid_mix_cpu``; with ``--before``, the same methods on the reference path they
replace (``PLSTM_FUSED_LAYER=0``: four ``plstm_2d`` calls on flipped copies, "fused" through
``grid_gating_matrix``), at 96 and 192 px.

Every cell (model, method, size) runs in its own subprocess, one after the other: it builds the
model, runs one warm-up forward (the peak resident memory it adds, ``ru_maxrss`` after minus
before, is the cell's memory figure) and then ``reps`` timed forwards. A pLSTM cell also builds
``vit_t`` and alternates the two models' forwards, so that its ratio to ViT compares forwards
taken under the same load (the ratio of the two medians); the ``vit_t`` row is its own cell.
With ``--rounds R`` every cell of 96 and 192 px runs R times, round-robin (larger ones once:
their forwards take seconds), and the table shows the median over rounds (all samples are in
the JSON). Other processes on the machine inflate the times: with ``--max-load L`` a cell
waits (up to ``--max-wait`` seconds) until the 1-minute load average is below L, and the load
average is recorded with every cell. The CPU time of every forward (``time.process_time``, all
threads) is reported beside the wall time: with one thread it leaves out the time other
processes hold the core. On the CPU "fused" runs the same form as "parallel", so it is measured
at 96 and 192 px only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

METHODS = ("parallel", "fused", "recurrent", "chunkwise")
LINEAR = ("recurrent", "chunkwise")
BEFORE_SIZES = (96, 192)


def _reps(img: int) -> int:
    return 7 if img <= 192 else (3 if img <= 384 else 1)


def run_cell(name: str, method: str | None, img: int, threads: int, before: bool) -> dict:
    """Time one model in this process (called in a fresh subprocess by :func:`cpu_rows`);
    a pLSTM model alternates with ``vit_t``."""
    if before:
        os.environ["PLSTM_FUSED_LAYER"] = "0"
    import torch

    from models import create_model

    torch.set_num_threads(threads)

    def build(model_name: str, model_method: str | None) -> torch.nn.Module:
        kwargs = {"img_size": img, "patch_size": 8, "num_classes": 1000}
        if model_method is not None:
            kwargs["method"] = model_method
        return create_model(model_name, **kwargs).eval()

    model = build(name, method)
    twin = build("vit_t", None) if name != "vit_t" else None
    x = torch.rand(1, 3, img, img)
    times: dict[str, list[float]] = {"model": [], "vit_t": []}
    cpu_times: dict[str, list[float]] = {"model": [], "vit_t": []}
    with torch.inference_mode():
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        model(x)
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
        if twin is not None:
            twin(x)
        for _ in range(_reps(img)):
            for key, net in (("model", model), ("vit_t", twin)):
                if net is None:
                    continue
                t0, c0 = time.perf_counter(), time.process_time()
                net(x)
                times[key].append(time.perf_counter() - t0)
                cpu_times[key].append(time.process_time() - c0)
    result = {
        "ms": statistics.median(times["model"]) * 1000,
        "cpu_ms": statistics.median(cpu_times["model"]) * 1000,
        "samples_ms": [t * 1000 for t in times["model"]],
        "peak_mb": peak_mb,
        "load": os.getloadavg(),
    }
    if twin is not None:
        result["vit_ms"] = statistics.median(times["vit_t"]) * 1000
        result["ratio"] = result["ms"] / result["vit_ms"]
        result["cpu_ratio"] = result["cpu_ms"] / (statistics.median(cpu_times["vit_t"]) * 1000)
    return result


def _cell_in_subprocess(cell: dict, timeout: float) -> dict:
    cmd = [sys.executable, "-m", "bench.vision_cpu", "--cell", json.dumps(cell)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s", "load": os.getloadavg()}
    except subprocess.CalledProcessError as exc:
        return {"error": exc.stderr.strip().splitlines()[-1][:160], "load": os.getloadavg()}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _variants(before: bool) -> list[tuple[str, str | None, bool]]:
    rows = [("vit_t", None, False)] + [("plstm_vis_t", m, False) for m in METHODS]
    if before:
        rows += [("plstm_vis_t", m, True) for m in METHODS]
    return rows


def _wait_for_load(max_load: float | None, max_wait: float) -> None:
    deadline = time.monotonic() + max_wait
    while max_load is not None and os.getloadavg()[0] >= max_load and time.monotonic() < deadline:
        time.sleep(5)


def cpu_rows(args: argparse.Namespace, sizes: list[int]) -> dict:
    """Every cell ``args.rounds`` times (round-robin; sizes above 192 px once); returns
    {"rows": [...], "samples": {...}}."""
    variants = _variants(args.before)
    samples: dict[str, list[dict]] = {}
    for r in range(args.rounds):
        for name, method, old in variants:
            for img in sizes:
                if (
                    (old and img not in BEFORE_SIZES)
                    or (r > 0 and img > 192)
                    or (method == "fused" and not old and img > 192)
                ):
                    continue  # on the CPU "fused" runs the very form of "parallel"
                key = _label(name, method, old) + f" @ {img}"
                cell = {"name": name, "method": method, "img": img, "threads": args.threads}
                cell["before"] = old
                _wait_for_load(args.max_load, args.max_wait)
                result = _cell_in_subprocess(cell, args.cell_timeout)
                samples.setdefault(key, []).append(result)
                print(f"round {r + 1}/{args.rounds} {key}: {json.dumps(result)}", flush=True)
    rows = []
    for name, method, old in variants:
        row: dict = {"model": _label(name, method, old)}
        for img in sizes:
            runs = samples.get(_label(name, method, old) + f" @ {img}")
            if not runs:
                continue
            good = [s for s in runs if "ms" in s]
            if not good:
                row[f"{img} px ms"] = runs[-1]["error"]
                continue
            row[f"{img} px ms"] = statistics.median(s["ms"] for s in good)
            row[f"{img} px cpu ms"] = statistics.median(s["cpu_ms"] for s in good)
            row[f"{img} px peak MB"] = max(s["peak_mb"] for s in good)
            if "ratio" in good[0]:
                row[f"{img} px × vit_t"] = statistics.median(s["ratio"] for s in good)
                row[f"{img} px cpu × vit_t"] = statistics.median(s["cpu_ratio"] for s in good)
        rows.append(row)
    return {"rows": rows, "samples": samples}


def _label(name: str, method: str | None, before: bool) -> str:
    if method is None:
        return name
    return f"{name} ({method}{', before: reference path' if before else ''})"


def _machine() -> dict:
    import torch

    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "logical_cpus": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def _table(rows: list[dict], sizes: list[int], unit: str) -> str:
    head = ["model"] + [f"{img} px" for img in sizes]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["model"]]
        for img in sizes:
            v = row.get(f"{img} px {unit}")
            cells.append("" if v is None else (f"{v:,.3g}" if isinstance(v, float) else str(v)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cpu_report(args: argparse.Namespace) -> tuple[dict, str]:
    """Run the CPU table: the result (JSON-ready) and its markdown."""
    sizes = [96, 192, 384] + ([768] if args.large else [])
    started = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "load": os.getloadavg()}
    result = {"device": "cpu", "threads": args.threads, "machine": _machine()}
    result["command"] = " ".join(["python -m bench.bench_vision", *sys.argv[1:]])
    result.update(cpu_rows(args, sizes))
    result["started"] = started
    result["finished"] = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "load": os.getloadavg()}
    machine = result["machine"]
    text = (
        f"# CPU latency, batch 1, {args.threads} threads, float32, patch 8\n\n"
        f"{machine['cpu']} ({machine['logical_cpus']} logical CPUs), torch {machine['torch']}; "
        f"`{result['command']}`; {started['time']} (load average {started['load'][0]:.1f}) to "
        f"{result['finished']['time']} (load {result['finished']['load'][0]:.1f}). Median ms "
        f"per forward over {args.rounds} round(s) (96, 192 px; one at 384, 768 px) of 7 (96, "
        f"192 px), 3 (384 px) or 1 (768 px) timed forwards after one warm-up.\n\n"
        "## Latency (ms)\n\n"
        + _table(result["rows"], sizes, "ms")
        + "\n\n## Relative to vit_t (each pLSTM forward alternating with a vit_t one)\n\n"
        + _table(result["rows"][1:], sizes, "× vit_t")
        + "\n\n## CPU time per forward, all threads (ms; `time.process_time`)\n\n"
        + _table(result["rows"], sizes, "cpu ms")
        + "\n\n## CPU time relative to vit_t\n\n"
        + _table(result["rows"][1:], sizes, "cpu × vit_t")
        + "\n\n## Peak resident memory added by the forwards (MB)\n\n"
        + _table(result["rows"], sizes, "peak MB")
        + "\n"
    )
    return result, text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cell", required=True, help="internal: one cell as JSON")
    cell = json.loads(parser.parse_args().cell)
    print(json.dumps(run_cell(**cell)))


if __name__ == "__main__":
    main()
