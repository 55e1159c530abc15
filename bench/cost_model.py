"""How well the cost model (app/serving/cost_formulas.py, app/serving/cost_profile.py) predicts the
shipped models: prints markdown tables of predicted against measured peak memory and time.

- memory: the peak of live tensors of one forward (bench/peak_memory.py) on the ``meta`` device,
  which runs the reference forms of the grid layers (as CUDA does), so sizes whose real run
  would not fit (the 96x96-patch grid of a 768 px image needs ~17 GB on the parallel path) are
  measured too; and on the CPU, which runs the CPU forms (summed and tiled), up to the sizes
  that run in seconds;
- time: the models are loaded as the server loads them (warm-up and calibration on the given
  device), then each size is run ``--repeats`` times and the fastest run is compared with the
  prediction. Sizes whose predicted time is over ``--max-seconds`` are left out.

Usage: python -m bench.cost_model [--device cpu] [--threads N] [--repository model_repository]
       [--time-only] (the last table: the path ``path=auto`` picks per input against the fastest)
"""

from __future__ import annotations

import argparse
import json
import math
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch

from app.serving import backends
from app.serving.cost_formulas import Architecture, GraphBatch, ImageBatch, formula, grid_forms_on
from app.serving.cost_limits import choose_path
from app.serving.repository import ModelRepository
from bench.peak_memory import PeakMemory
from models.registry import create_model
from plstm_core.ops.workspace import release_scratch

GRIDS = (12, 24, 48, 96)
CPU_PARALLEL_GRIDS = (12, 24, 48)
"""The CPU's summed form is quadratic: 96x96 patches would take minutes."""
TIME_GRIDS = (12, 16, 24, 32, 48, 64)
MOLECULES = ((20,), (20,) * 16, (60,) * 8)


def _mib(n: float) -> str:
    return f"{n / 2**20:,.1f}"


def memory_table(repository: Path, device: str) -> list[str]:
    """Predicted against measured peak memory of arrow-pointing on ``device`` (meta or cpu)."""
    meta = json.loads((repository / "arrow-pointing" / "1" / "config.json").read_text())
    with torch.device(device):
        model = create_model(meta["architecture"], **meta["config"]).eval()
    forms = grid_forms_on(torch.device(device))
    arch = Architecture.from_config("plstm_vision", model.config, grid_forms=forms)
    rows = ["| path | patches | measured MiB | predicted MiB | predicted / measured |"]
    rows.append("|---|---|---|---|---|")
    for path in ("parallel", "chunkwise", "recurrent"):
        model.set_method(path)
        if device == "meta":
            grids = GRIDS if path != "recurrent" else GRIDS[:3]
        else:
            grids = CPU_PARALLEL_GRIDS if path == "parallel" else GRIDS
        for side in grids:
            x = torch.rand(1, 3, side * arch.patch, side * arch.patch, device=device)
            release_scratch()
            with torch.inference_mode(), PeakMemory() as memory:
                model(x)
            estimate = formula("plstm_vision", path, forms).memory(arch, ImageBatch(1, side, side))
            rows.append(
                f"| {path} | {side}x{side} | {_mib(memory.peak)} | {_mib(estimate)} | "
                f"{estimate / memory.peak:.2f} |"
            )
    return rows


def _interleaved(runs: dict[str, Any], repeats: int) -> dict[str, float]:
    """The fastest of ``repeats`` timed calls of each run, after one untimed call each; the runs
    take turns (in a rotating order), so that a slow moment of the machine or the first use of
    a buffer does not fall on one of them only."""
    if not runs:
        return {}
    for run in runs.values():
        run()
    best = dict.fromkeys(runs, float("inf"))
    names = list(runs)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            runs[name]()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def _chain_molecule(nodes: int, features: int, edge_features: int, seed: int):
    from models.molecule_features import MolGraph

    gen = torch.Generator().manual_seed(seed)
    src = list(range(nodes - 1)) + list(range(0, nodes - 2, 3))
    dst = list(range(1, nodes)) + list(range(2, nodes, 3))
    x = torch.rand(nodes, features, generator=gen)
    return MolGraph(x, torch.tensor([src, dst]), torch.rand(len(src), edge_features, generator=gen))


def _cases(entry, profile) -> list[tuple[Any, str, Any]]:
    """(size, description, data) of the inputs timed for ``entry``."""
    if entry.kind == "image":
        patch = profile.arch.patch
        return [
            (
                ImageBatch(1, side, side),
                f"{side}x{side} patches",
                torch.rand(1, 3, side * patch, side * patch),
            )
            for side in TIME_GRIDS
        ]
    f, fe = profile.arch.node_features, profile.arch.edge_features
    cases = []
    for i, nodes in enumerate(MOLECULES):
        graphs = [_chain_molecule(n, f, fe, i * 100 + j) for j, n in enumerate(nodes)]
        cases.append((GraphBatch.of(graphs), f"{len(nodes)} x {nodes[0]} atoms", graphs))
    return cases


def time_tables(
    repository: Path, device: str, repeats: int, max_seconds: float
) -> tuple[list[str], list[str]]:
    """Predicted against measured time per path and size, and per size the path ``auto`` picks
    against the fastest measured one."""
    repo = ModelRepository(repository, device, warmup=True)
    repo.load_all()
    rows = ["| model | path | input | measured s | predicted s | predicted / measured |"]
    rows.append("|---|---|---|---|---|---|")
    auto = [
        "| model | input | auto picks | its time s | fastest path | fastest s | auto / fastest |"
    ]
    auto.append("|---|---|---|---|---|---|---|")
    for entry in repo.entries():
        profile = entry.cost
        if profile is None or not entry.ready:
            continue
        call = backends.run_images if entry.kind == "image" else backends.run_graphs
        for size, what, data in _cases(entry, profile):
            runnable = [
                path
                for path in profile.paths
                if (profile.estimate(path, size).seconds or 0.0) <= max_seconds
                and profile.fits(path, size)
            ]
            measured = _interleaved({p: partial(call, entry, data, p) for p in runnable}, repeats)
            for path in runnable:
                estimate = profile.estimate(path, size).seconds or 0.0
                rows.append(
                    f"| {entry.name} | {path} | {what} | {measured[path]:.4f} | "
                    f"{estimate:.4f} | {estimate / measured[path]:.2f} |"
                )
            picked = choose_path(
                entry, "auto", size, remaining_s=math.inf, max_tokens=2**31, smaller=""
            )
            if picked not in measured or len(measured) < 2:
                continue
            best = min(measured, key=measured.__getitem__)
            auto.append(
                f"| {entry.name} | {what} | {picked} | {measured[picked]:.4f} | {best} | "
                f"{measured[best]:.4f} | {measured[picked] / measured[best]:.2f} |"
            )
    return rows, auto


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-seconds", type=float, default=5.0)
    parser.add_argument("--time-only", action="store_true", help="skip the memory tables")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} thread(s)\n")
    for device in () if args.time_only else ("meta", "cpu"):
        forms = grid_forms_on(torch.device(device))
        print(
            f"\nPeak memory of one forward of arrow-pointing (batch 1), {device} ({forms} forms):\n"
        )
        print("\n".join(memory_table(args.repository, device)))
    times, auto = time_tables(args.repository, args.device, args.repeats, args.max_seconds)
    print("\nTime of one call after calibration at load:\n")
    print("\n".join(times))
    print("\nThe path `auto` picks for each input against the fastest measured path:\n")
    print("\n".join(auto))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
