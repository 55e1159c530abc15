"""Launch settings of the fused grid-layer kernels (``plstm_core/ops/grid_mix_triton.py``).

Times the forward and the backward kernel for every (sources per program, warps, bf16 operands)
on the grid sizes pLSTM-Vis-T meets (224 px: 14×14, 96 px / patch 8: 12×12), each replayed from a
CUDA graph (median of 20 replays), checks each setting's output against the default float32
launch, and prints one table per size, fastest first.

Usage: python bench/tune_grid_mix.py [--out DIR]   (CUDA + Triton)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

import torch

from plstm_core.ops.grid_mix import GridMixLayout
from plstm_core.ops.grid_mix_triton import Launch, _backward, _forward

FORWARD_CASES = [(256, 14, 14), (256, 12, 12), (128, 12, 12), (1, 14, 14), (1, 12, 12)]
BACKWARD_CASES = [(128, 12, 12)]
SOURCES = (16, 32, 64, 128, 256)
WARPS = (1, 2, 4, 8)
BACKWARD_SOURCES = (32, 64)
BACKWARD_WARPS = (2, 4, 8)


def replay_ms(fn, reps: int = 20) -> float:
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def run_fn(kind: str, z: torch.Tensor, dh: torch.Tensor, layout: GridMixLayout, launch: Launch):
    if kind == "forward":
        return lambda: _forward(z, layout, launch)
    return lambda: _backward(z, dh, layout, launch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=os.environ.get("OUT", "bench_out"))
    parser.add_argument("--only", choices=["forward", "backward"], help="tune one kernel only")
    args = parser.parse_args()
    layout = GridMixLayout(num_heads=3, qk_head_dim=64, v_head_dim=64, mode="P")
    results: dict[str, list] = {}
    for kind, cases in (("forward", FORWARD_CASES), ("backward", BACKWARD_CASES)):
        if args.only not in (None, kind):
            continue
        for B, X, Y in cases:
            g = torch.Generator(device="cuda").manual_seed(0)
            z = torch.randn(B, X, Y, layout.width, device="cuda", generator=g).bfloat16()
            dh = torch.randn(B, X, Y, 3, 64, device="cuda", generator=g)
            if kind == "forward":
                ref = _forward(z.float(), layout, Launch())
            else:
                ref = _backward(z.float(), dh, layout, Launch())
            rows = []
            n_pad = X * 16
            sources = SOURCES if kind == "forward" else BACKWARD_SOURCES
            for sb in sources:
                if sb > 2 * n_pad:
                    continue
                for warps in WARPS if kind == "forward" else BACKWARD_WARPS:
                    for low in (False, True) if kind == "forward" else (True,):
                        launch = Launch(**{kind: (sb, warps)}, low_precision=low)
                        fn = run_fn(kind, z, dh, layout, launch)
                        try:
                            err = ((fn() - ref).abs().max() / ref.abs().max()).item()
                            ms = replay_ms(fn)
                        except Exception as exc:  # e.g. out of registers / shared memory
                            error = str(exc)[:80]
                            rows.append({"SB": sb, "warps": warps, "bf16": low, "error": error})
                            continue
                        row = {"SB": sb, "warps": warps, "bf16": low, "ms": ms, "rel err": err}
                        rows.append(row)
            rows.sort(key=lambda r: r.get("ms", float("inf")))
            key = f"{kind} B={B} {X}x{Y}"
            results[key] = rows
            print(f"## {key}")
            for r in rows[:8]:
                print(json.dumps(r))
            print(flush=True)
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            (out / "tune_grid_mix.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
