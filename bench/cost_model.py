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
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path

import torch

from app.serving import backends
from app.serving.cost_formulas import Architecture, GraphBatch, ImageBatch, formula, grid_forms_on
from app.serving.repository import ModelRepository
from bench.peak_memory import PeakMemory
from models.registry import create_model
from plstm_core.ops.workspace import release_scratch

GRIDS = (12, 24, 48, 96)
CPU_PARALLEL_GRIDS = (12, 24, 48)
"""The CPU's summed form is quadratic: 96x96 patches would take minutes."""
TIME_GRIDS = (12, 16, 24, 32, 48)
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


def _fastest(run, repeats: int) -> float:
    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def _chain_molecule(nodes: int, features: int, edge_features: int, seed: int):
    from models.molecule_features import MolGraph

    gen = torch.Generator().manual_seed(seed)
    src = list(range(nodes - 1)) + list(range(0, nodes - 2, 3))
    dst = list(range(1, nodes)) + list(range(2, nodes, 3))
    x = torch.rand(nodes, features, generator=gen)
    return MolGraph(x, torch.tensor([src, dst]), torch.rand(len(src), edge_features, generator=gen))


def time_table(repository: Path, device: str, repeats: int, max_seconds: float) -> list[str]:
    repo = ModelRepository(repository, device, warmup=True)
    repo.load_all()
    rows = ["| model | path | input | measured s | predicted s | predicted / measured |"]
    rows.append("|---|---|---|---|---|---|")
    for entry in repo.entries():
        profile = entry.cost
        if profile is None or not entry.ready:
            continue
        for path in profile.paths:
            if entry.kind == "image":
                cases = []
                for side in TIME_GRIDS:
                    images = torch.rand(1, 3, side * profile.arch.patch, side * profile.arch.patch)
                    cases.append((ImageBatch(1, side, side), f"{side}x{side} patches", images))
            else:
                f, fe = profile.arch.node_features, profile.arch.edge_features
                cases = []
                for i, nodes in enumerate(MOLECULES):
                    graphs = [_chain_molecule(n, f, fe, i * 100 + j) for j, n in enumerate(nodes)]
                    what = f"{len(nodes)} x {nodes[0]} atoms"
                    cases.append((GraphBatch.of(graphs), what, graphs))
            for size, what, data in cases:
                estimate = profile.estimate(path, size)
                if estimate.seconds is None or estimate.seconds > max_seconds:
                    continue
                if not profile.fits(path, size):
                    continue
                call = backends.run_images if entry.kind == "image" else backends.run_graphs
                measured = _fastest(partial(call, entry, data, path), repeats)
                rows.append(
                    f"| {entry.name} | {path} | {what} | {measured:.4f} | "
                    f"{estimate.seconds:.4f} | {estimate.seconds / measured:.2f} |"
                )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} thread(s)\n")
    for device in ("meta", "cpu"):
        forms = grid_forms_on(torch.device(device))
        print(
            f"\nPeak memory of one forward of arrow-pointing (batch 1), {device} ({forms} forms):\n"
        )
        print("\n".join(memory_table(args.repository, device)))
    print("\nTime of one call after calibration at load:\n")
    print("\n".join(time_table(args.repository, args.device, args.repeats, args.max_seconds)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
