"""Top CUDA kernels of one op call (forward, and forward+backward), for finding what costs.

Usage: python bench/profile_ops.py [--grid 14]
    [--method parallel|chunkwise|fused4|dag-parallel|dag-recurrent]
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from bench.bench_ops import dag_inputs, fused_four_orientations, grid_inputs, random_molecule_dags
from plstm_core.ops.dag import plstm_dag, prepare_dag
from plstm_core.ops.dag_structure import build_line_index
from plstm_core.ops.grid import plstm_2d


def build(method: str, side: int, dev: torch.device):
    gen = torch.Generator(device=dev).manual_seed(0)
    if method.startswith("dag"):
        edge_index, n = random_molecule_dags(256, (20, 60), torch.Generator().manual_seed(0))
        line_index = build_line_index(edge_index, num_nodes=n)
        ei, li = edge_index.to(dev), line_index.to(dev)
        inputs = dag_inputs(
            edge_index,
            line_index,
            n,
            4,
            32,
            32,
            gen=torch.Generator().manual_seed(1),
            dtype=torch.float32,
            device=dev,
            requires_grad=True,
        )
        m = method.split("-")[1]
        plan = prepare_dag(ei, li, n, method=m)
        return inputs, lambda: plstm_dag(
            **inputs, edge_index=ei, line_index=li, method=m, plan=plan
        )
    inputs = grid_inputs(
        64, 3, side, side, 64, 64, gen=gen, dtype=torch.bfloat16, device=dev, requires_grad=True
    )
    if method == "fused4":
        return inputs, lambda: fused_four_orientations(**inputs)
    return inputs, lambda: plstm_2d(**inputs, method=method)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--grid", type=int, default=14)
    parser.add_argument("--method", default="parallel")
    args = parser.parse_args()
    dev = torch.device("cuda")
    inputs, fn = build(args.method, args.grid, dev)
    for label, with_grad in (("forward", False), ("forward+backward", True)):

        def step(with_grad=with_grad):
            if with_grad:
                h = fn()
                torch.autograd.grad(h, list(inputs.values()), torch.ones_like(h))
            else:
                with torch.no_grad():
                    fn()

        for _ in range(3):
            step()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                step()
            torch.cuda.synchronize()
        print(f"== {args.method} {args.grid}² {label} (5 calls)")
        print(
            prof.key_averages().table(
                sort_by="cuda_time_total", row_limit=12, max_name_column_width=70
            )
        )


if __name__ == "__main__":
    main()
