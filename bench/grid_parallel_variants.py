"""Compare ways of running the fully parallel 2D op on one GPU, side by side in one run.

Variants: the fused Triton forward (the library's default on a GPU), the PyTorch path
(``PLSTM_DISABLE_TRITON=1``) eager, under torch.compile and replayed from a CUDA graph, and
SDPA on the same token counts as a yardstick.
Usage: python bench/grid_parallel_variants.py [--grids 12 14 16 24 32] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics

import torch
import torch.nn.functional as F

from plstm_core.ops import grid_triton
from plstm_core.ops.grid import plstm_2d
from plstm_core.ops.grid_naive import plstm_2d_naive


def gates(B, H, X, Y, K, V, device, dtype, generator):
    def r(*shape):
        return torch.randn(*shape, device=device, generator=generator)

    alpha = torch.sigmoid(r(B, H, X, Y, 1, 1))
    T = 0.99 * torch.cat([alpha, 1 - alpha], dim=-1).expand(B, H, X, Y, 2, 2)
    return [
        t.to(dtype)
        for t in (
            r(B, H, X, Y, K) / K**0.5,
            r(B, H, X, Y, K),
            r(B, H, X, Y, V),
            torch.sigmoid(r(B, H, X, Y, 2)),
            T.contiguous(),
            torch.sigmoid(r(B, H, X, Y, 2)),
            torch.sigmoid(r(B, H, X, Y)),
        )
    ]


def time_ms(fn, reps=50, warmup=5):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def graphed(fn):
    """Capture ``fn`` into a CUDA graph and return a replay function."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--grids", type=int, nargs="+", default=[12, 14, 16, 24, 32])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--heads", type=int, default=3)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--out", default=os.environ.get("OUT", "bench_out"))
    parser.add_argument(
        "--tune",
        type=lambda t: tuple(int(n) for n in t.split(",")),
        nargs="*",
        default=[],
        help="Triton (source block, warps) launches to time as well, e.g. 32,1 64,2",
    )
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(0)
    B, H, D = args.batch, args.heads, args.dim

    small = [t.double() for t in gates(1, 2, 5, 7, 8, 8, dev, torch.float32, g)]
    ref = plstm_2d_naive(*small)
    compiled = torch.compile(plstm_2d, dynamic=False)
    os.environ["PLSTM_DISABLE_TRITON"] = "1"  # torch.compile traces the PyTorch path
    for name, fn in [("eager", plstm_2d), ("compiled", compiled)]:
        err = (fn(*[t.float() for t in small]).double() - ref).abs().max() / ref.abs().max()
        print(f"check {name}: rel err {err:.2e}")
        assert err < 1e-4
    del os.environ["PLSTM_DISABLE_TRITON"]

    rows = []
    for n in args.grids:
        x = gates(B, H, n, n, D, D, dev, torch.bfloat16, g)
        q, k, v = (t.reshape(B, H, n * n, D) for t in x[:3])
        row = {"grid": n, "tokens": n * n}
        row["sdpa"] = time_ms(lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v))
        row["sdpa_graph"] = time_ms(
            graphed(lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v))
        )
        row["triton"] = time_ms(lambda x=x: plstm_2d(*x, method="parallel"))
        row["triton_graph"] = time_ms(graphed(lambda x=x: plstm_2d(*x, method="parallel")))
        default = (grid_triton.LAUNCH_SMALL, grid_triton.LAUNCH_LARGE)
        for block, warps in args.tune:
            grid_triton.LAUNCH_SMALL = grid_triton.LAUNCH_LARGE = (block, warps)
            fn = graphed(lambda x=x: plstm_2d(*x, method="parallel"))
            row[f"triton_sb{block}_w{warps}_graph"] = time_ms(fn)
        grid_triton.LAUNCH_SMALL, grid_triton.LAUNCH_LARGE = default
        os.environ["PLSTM_DISABLE_TRITON"] = "1"
        row["torch"] = time_ms(lambda x=x: plstm_2d(*x, method="parallel"))
        row["torch_graph"] = time_ms(graphed(lambda x=x: plstm_2d(*x, method="parallel")))
        row["compiled_graph"] = time_ms(graphed(lambda x=x: compiled(*x, method="parallel")))
        del os.environ["PLSTM_DISABLE_TRITON"]
        rows.append(row)
        print(row, flush=True)

    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        cells = [f"{row[k]:.3f}" if isinstance(row[k], float) else str(row[k]) for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(f"\nforward ms, B={B} H={H} K=V={D} bf16, {torch.cuda.get_device_name()}\n{table}")
    with open(os.path.join(args.out, "grid_parallel_variants.json"), "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
