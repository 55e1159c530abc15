"""The chunkwise (tiled) form of the grid layer's four-orientation mix on a GPU, side by side with
the layer's GPU forms, in one run: time (forward in inference mode, and forward + backward) and
peak memory per tile side, against the four ``plstm_2d`` chunkwise calls on flipped copies (the
layer's GPU path for the linear methods) and the fused Triton kernel where it applies
(grids up to 1024 padded nodes). First every tile side is checked against the float64 loop
reference on a random projection (random gate logits), outputs and the gradient of z.

pLSTM-Vis-T sizes: H = 3 heads, K = V = 64, mode P and D, bf16 projection (as under autocast).

Usage: python bench/grid_tiles_gpu.py [--out DIR] [--quick]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import torch

from bench.grid_parallel_variants import time_ms
from plstm_core.ops.grid_mix import GridMixLayout, grid_mix_reference
from plstm_core.ops.grid_mix_tiles import grid_mix_tiles
from plstm_core.ops.grid_mix_triton import grid_mix_fused, grid_mix_supported

TILES = (4, 8, 16, 32)
CASES = ((16, 14, 14), (16, 32, 32), (4, 64, 64), (1, 128, 128), (4, 128, 128))
"""(batch, X, Y): 224 px, 512 px, 1024 px and 2048 px at patch 16."""


def peak_gib(fn: Callable[[], object]) -> float:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**30


def check(layout: GridMixLayout, tile: int, device: torch.device) -> dict:
    """Max relative error of the tiled form (float32) against the float64 reference."""
    g = torch.Generator(device=device).manual_seed(tile)
    z64 = torch.randn(2, 37, 29, layout.width, generator=g, device=device, dtype=torch.float64)
    w = torch.randn(2, 37, 29, layout.num_heads, layout.v_head_dim, device=device,
                    dtype=torch.float64, generator=g)  # fmt: skip
    z = z64.clone().requires_grad_(True)
    ref = grid_mix_reference(z, layout, method="recurrent")
    (ref_dz,) = torch.autograd.grad((ref * w).sum(), z)
    z32 = z64.float().requires_grad_(True)
    out = grid_mix_tiles(z32, layout, tile)
    (dz,) = torch.autograd.grad((out * w.float()).sum(), z32)
    rel = lambda a, b: ((a.double() - b).abs().max() / b.abs().max()).item()  # noqa: E731
    return {"tile": tile, "mode": layout.mode, "out rel err": rel(out, ref),
            "dz rel err": rel(dz, ref_dz)}  # fmt: skip


def forms(layout: GridMixLayout, z: torch.Tensor) -> dict[str, Callable[[torch.Tensor], object]]:
    out: dict[str, Callable[[torch.Tensor], object]] = {
        f"tiles {t}": (lambda x, t=t: grid_mix_tiles(x, layout, t)) for t in TILES
    }
    out["4 x plstm_2d chunkwise"] = lambda x: grid_mix_reference(
        x, layout, method="chunkwise", chunk_size=16
    )
    if grid_mix_supported(z, layout):
        out["fused Triton (parallel)"] = lambda x: grid_mix_fused(x, layout)
    return out


def measure(label: str, run: Callable[[], object]) -> dict:
    try:
        return {f"{label} ms": time_ms(run, reps=10, warmup=2), f"{label} peak GiB": peak_gib(run)}
    except torch.OutOfMemoryError:
        return {f"{label} ms": "out of memory"}
    finally:
        torch.cuda.empty_cache()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--quick", action="store_true", help="the first two sizes only")
    args = parser.parse_args()
    device = torch.device("cuda")
    rows, checks = [], []
    for mode in ("P", "D"):
        layout = GridMixLayout(num_heads=3, qk_head_dim=64, v_head_dim=64, mode=mode)
        checks += [check(GridMixLayout(2, 8, 8, mode), t, device) for t in TILES]
        for B, X, Y in CASES[:2] if args.quick else CASES:
            z = torch.randn(B, X, Y, layout.width, device=device, dtype=torch.bfloat16)
            for name, fn in forms(layout, z).items():
                row = {"mode": mode, "grid": f"{B} x {X}x{Y}", "form": name}

                def forward(fn=fn, z=z) -> None:
                    with torch.inference_mode():
                        fn(z)

                def backward(fn=fn, z=z) -> None:
                    x = z.detach().requires_grad_(True)
                    fn(x).float().sum().backward()

                row.update(measure("forward", forward))
                if X * Y <= 64 * 64:
                    row.update(measure("fwd+bwd", backward))
                print(json.dumps(row), flush=True)
                rows.append(row)
    text = f"# {torch.cuda.get_device_name()}, torch {torch.__version__}\n\n"
    text += "Max relative error against the float64 reference (37x29 grid, float32):\n\n"
    text += table(checks) + "\n\n" + table(rows) + "\n"
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "grid_tiles_gpu.json").write_text(json.dumps({"checks": checks, "rows": rows}))
        (args.out / "grid_tiles_gpu.md").write_text(text)
    return 0


def table(rows: list[dict]) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r.get(k, "-")) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
