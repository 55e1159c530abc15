"""Training and inference throughput of pLSTM-Vis against ViT, side by side in one run.

One training step = forward + backward + fused AdamW step under bf16 autocast (as `plstm train`
runs on a GPU), timed eagerly and with forward + backward replayed from CUDA graphs
(training.cuda_graph.GraphedTraining, the `plstm train` default on one GPU); inference =
forward under no_grad. Prints a markdown table of samples/s and the top CUDA kernels of one
eager pLSTM training step.
Usage: python bench/bench_models.py [--img 96] [--patch 8] [--batch 128] [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from models import create_model
from training.cuda_graph import GraphedTraining


def time_step(step, device: torch.device, reps: int) -> float:
    """Median seconds of ``step()`` after warm-up."""
    for _ in range(3):
        step()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--img", type=int, default=96)
    parser.add_argument("--patch", type=int, default=8)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="tiny models on the CPU")
    parser.add_argument("--out", default=os.environ.get("OUT", "bench_out"))
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.quick else "cpu")
    tiny = {"dim": 32, "depth": 2, "num_heads": 2} if args.quick else {}
    variants = [
        ("vit_t", {}),
        ("plstm_vis_t", {"method": "parallel"}),
        ("plstm_vis_t", {"method": "fused"}),
        ("plstm_vis_t", {"method": "chunkwise", "chunk_size": 8}),
    ]
    amp = device.type == "cuda"
    gen = torch.Generator(device=device).manual_seed(0)
    images = torch.rand(args.batch, 3, args.img, args.img, device=device, generator=gen)
    labels = torch.randint(0, 2, (args.batch,), device=device, generator=gen)
    rows, profiled = [], None
    for name, extra in variants:
        model = create_model(
            name, img_size=args.img, patch_size=args.patch, num_classes=2, **tiny, **extra
        ).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")

        def train_step(forward=model, opt=opt):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss = F.cross_entropy(forward(images), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        def infer_step(model=model):
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                model(images)

        label = name + (f" ({extra['method']})" if "method" in extra else "")
        train_s = time_step(train_step, device, args.reps)
        graphed_s = None
        if device.type == "cuda":
            graphed = GraphedTraining(model, amp=amp)
            graphed_s = time_step(lambda g=graphed: train_step(forward=g), device, args.reps)
        infer_s = time_step(infer_step, device, args.reps)
        rows.append(
            {
                "model": label,
                "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
                "train_samples_per_s": args.batch / train_s,
                "train_graph_samples_per_s": graphed_s and args.batch / graphed_s,
                "infer_samples_per_s": args.batch / infer_s,
            }
        )
        print(rows[-1], flush=True)
        if profiled is None and name.startswith("plstm") and device.type == "cuda":
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                train_step()
                torch.cuda.synchronize()
            profiled = prof.key_averages().table(sort_by="cuda_time_total", row_limit=15)
        del model, opt
    vit = rows[0]["train_samples_per_s"]
    vit_graph = rows[0]["train_graph_samples_per_s"]
    lines = [
        f"batch {args.batch}, {args.img} px, patch {args.patch}, bf16 autocast={amp}, "
        f"{torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'}",
        "",
        "| model | params (M) | train samples/s (eager) | this time / ViT time (eager) | "
        "train samples/s (CUDA graph) | this time / ViT time (CUDA graph) | "
        "inference samples/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        graph = r["train_graph_samples_per_s"]
        graph_cells = f"{graph:.0f} | {vit_graph / graph:.2f}" if graph else "- | -"
        lines.append(
            f"| {r['model']} | {r['params_M']:.2f} | {r['train_samples_per_s']:.0f} | "
            f"{vit / r['train_samples_per_s']:.2f} | {graph_cells} | "
            f"{r['infer_samples_per_s']:.0f} |"
        )
    table = "\n".join(lines)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "bench_models.json"), "w") as f:
        json.dump(rows, f, indent=1)
    with open(os.path.join(args.out, "bench_models.md"), "w") as f:
        f.write(table + "\n")
    if profiled:
        with open(os.path.join(args.out, "profile_plstm_train_step.txt"), "w") as f:
            f.write(profiled)
    print(table)


if __name__ == "__main__":
    main()
