"""pLSTM-Vis against ViT and timm's DeiT-T, side by side in one run (GPU or CPU).

GPU (bf16 autocast, inference mode for forwards): images/s of the forward at 224 px batch 256 and
96 px / patch 8 batch 256 replayed from one CUDA graph, the batch-1 latency at 224 px (graph),
1024 px batch 4 and 2048 px batch 1 eagerly with the peak memory; training samples/s (forward +
backward + fused AdamW, 96 px / patch 8, batch 128); an MFU estimate (FLOPs per image from
torch's FLOP counter for matrix products, convolutions and attention, plus the pLSTM kernels'
own count, over the measured time, against the bf16 dense peak); the top CUDA kernels of one
pLSTM-Vis-T forward; the shipped arrow model's logits through the fused layer against the
unfused float32 path.

CPU (``--cpu``; batch 1, ``torch.set_num_threads(--threads)``, float32): latency and peak memory
of every method at 96, 192, 384 (and 768 with ``--large``) px, patch 8 (the arrow models' set-up),
each cell in its own subprocess; ``--before`` adds the reference path at 96 and 192 px,
``--rounds`` repeats every cell (see ``bench/vision_cpu.py``).

Usage:
    python bench/bench_vision.py --out DIR            # GPU; writes vision_<device>.{json,md}
    python bench/bench_vision.py --cpu --threads 2 --large --before --out DIR  # CPU table
timm is a benchmark-only dependency (present on the GPU machine); without it the DeiT-T rows
are skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.vision_cpu import cpu_report
from models import create_model
from models.vision import PLSTMVision

H100_BF16_DENSE_TFLOPS = 989.4  # H100 / H200 SXM, bf16 dense tensor-core peak


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_seconds(fn: Callable[[], object], device: torch.device, reps: int, warmup: int = 3):
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@contextlib.contextmanager
def env(**values: str):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def build(name: str, img: int, patch: int, method: str | None) -> torch.nn.Module:
    if name == "deit_t":
        import timm

        return timm.create_model("deit_tiny_patch16_224", img_size=img, patch_size=patch)
    kwargs = {"img_size": img, "patch_size": patch, "num_classes": 1000}
    if method is not None:
        kwargs["method"] = method
    return create_model(name, **kwargs)


def graphed(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    """A replay function of one CUDA graph of ``model(x)`` (bf16 autocast, inference mode)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.inference_mode(), torch.autocast("cuda", torch.bfloat16):
        for _ in range(3):
            model(x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.inference_mode(), torch.autocast("cuda", torch.bfloat16):
        model(x)
    return graph.replay


def eager(model: torch.nn.Module, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    def run() -> torch.Tensor:
        with torch.inference_mode(), torch.autocast(x.device.type, torch.bfloat16):
            return model(x)

    return run


def plstm_mixer_flops(model: torch.nn.Module, img: int) -> float:
    """FLOPs of the pLSTM kernels per image: 2·N²·(K+V) per layer, head and orientation (the
    masked contraction, paper eq. 7; the gating construction is not counted)."""
    if not isinstance(model, PLSTMVision):
        return 0.0
    n = (img // model.patch_size) ** 2
    total = 0.0
    for block in model.blocks:
        layer = block.mixer
        total += 2 * n * n * (layer.qk_head_dim + layer.v_head_dim) * layer.num_heads * 4
    return total


def flops_per_image(model: torch.nn.Module, img: int, device: torch.device) -> float:
    x = torch.zeros(1, 3, img, img, device=device)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad(), env(PLSTM_DISABLE_TRITON="1"):
        model(x)
    return counter.get_total_flops() + plstm_mixer_flops(model, img)


def forward_row(name: str, method: str | None, device: torch.device, quick: bool) -> dict:
    row: dict = {"model": name if method is None else f"{name} ({method})"}
    scale = 8 if quick else 1
    cells = [
        ("224 px b256 graph img/s", 224, 16, 256 // scale, True),
        ("224 px b1 graph ms", 224, 16, 1, True),
        ("96 px p8 b256 graph img/s", 96, 8, 256 // scale, True),
        ("1024 px b4 eager img/s", 1024, 16, 4 // (2 if quick else 1), False),
        ("2048 px b1 eager img/s", 2048, 16, 1, False),
    ]
    for label, img, patch, batch, use_graph in cells:
        if quick and img > 1024:
            continue
        try:
            model = build(name, img, patch, method).to(device).eval()
            x = torch.rand(batch, 3, img, img, device=device)
            torch.cuda.reset_peak_memory_stats()
            run = graphed(model, x) if use_graph else eager(model, x)
            seconds = median_seconds(run, device, reps=20 if use_graph else 3, warmup=1)
            row[label] = seconds * 1000 if batch == 1 and use_graph else batch / seconds
            if not use_graph:
                row[label.replace("img/s", "peak GB")] = torch.cuda.max_memory_allocated() / 2**30
            if img == 224 and batch > 1:
                flops = flops_per_image(model, img, device)
                row["GFLOP/img (224)"] = flops / 1e9
                row["MFU (224 b256)"] = flops * row[label] / 1e12 / H100_BF16_DENSE_TFLOPS
            del model, run
        except Exception as exc:  # a failing cell (e.g. out of memory) must not end the run
            row[label] = f"failed: {type(exc).__name__}: {str(exc)[:120]}"
        torch.cuda.empty_cache()
    print(json.dumps(row), flush=True)
    return row


def training_row(name: str, method: str | None, device: torch.device, quick: bool) -> dict:
    batch = 16 if quick else 128
    model = build(name, 96, 8, method).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    x = torch.rand(batch, 3, 96, 96, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)

    def step() -> None:
        with torch.autocast("cuda", torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    seconds = median_seconds(step, device, reps=10)
    label = name if method is None else f"{name} ({method})"
    row = {"model": label, "train samples/s": batch / seconds}
    print(json.dumps(row), flush=True)
    return row


def kernel_profile(device: torch.device, quick: bool) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    model = build("plstm_vis_t", 224, 16, "parallel").to(device).eval()
    run = eager(model, torch.rand(32 if quick else 256, 3, 224, 224, device=device))
    run()
    _sync(device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        run()
        _sync(device)
    return top_kernels(prof)


def shipped_parity(device: torch.device) -> list[dict]:
    """Logits of the shipped arrow model through the fused layer and the unfused one, each in
    bf16 autocast and in float32: max |Δlogit| of every pair, and agreeing predictions."""
    from models import load_checkpoint
    from training.data.arrows import ArrowPointingDataset

    model = load_checkpoint(Path("model_repository/arrow-pointing/1"), device=device).model
    data = ArrowPointingDataset(64, resolution=96, seed=123)
    x = torch.stack([data[i][0] for i in range(64)]).to(device)
    logits = {}
    for layer in ("fused", "unfused"):
        for precision in ("bf16", "fp32"):
            flag = "1" if layer == "fused" else "0"
            amp = torch.autocast("cuda", torch.bfloat16, enabled=precision == "bf16")
            with env(PLSTM_FUSED_LAYER=flag), torch.inference_mode(), amp:
                logits[f"{layer} {precision}"] = model(x).float()
    rows = []
    for a, b in (
        ("fused bf16", "unfused bf16"),
        ("fused fp32", "unfused fp32"),
        ("fused bf16", "unfused fp32"),
        ("unfused bf16", "unfused fp32"),
    ):
        diff = (logits[a] - logits[b]).abs().max().item()
        same = int((logits[a].argmax(-1) == logits[b].argmax(-1)).sum().item())
        scale = logits[b].abs().max().item()
        rows.append(
            {
                "pair": f"{a} vs {b}",
                "max |Δlogit|": diff,
                "max |logit|": scale,
                "same predictions": f"{same}/{x.shape[0]}",
            }
        )
    return rows


def server_graphs(device: torch.device) -> list[dict]:
    """The shipped arrow model as the server runs it (float32 weights, the parallel path
    replayed from ``app.serving.cuda_graphs.InferenceGraphs`` per batch bucket): batch-1 latency and
    batch-64 images/s, fused layer against unfused."""
    from app.serving.cuda_graphs import InferenceGraphs
    from models import load_checkpoint

    model = load_checkpoint(Path("model_repository/arrow-pointing/1"), device=device).model
    rows = []
    for layer, flag in (("fused", "1"), ("unfused", "0")):
        row: dict = {"layer": layer}
        with env(PLSTM_FUSED_LAYER=flag):
            graphs = InferenceGraphs(max_batch=64)
            for batch in (1, 64):
                x = torch.rand(batch, 3, 96, 96, device=device)
                tokens = (96 // model.patch_size) ** 2

                def run(x=x, tokens=tokens, graphs=graphs) -> torch.Tensor:
                    with torch.inference_mode():
                        return graphs(model, x, tokens, key="parallel")

                seconds = median_seconds(run, device, reps=20)
                if batch == 1:
                    row["b1 ms"] = seconds * 1000
                else:
                    row["b64 img/s"] = batch / seconds
        rows.append(row)
    return rows


def train_profile(device: torch.device, quick: bool) -> list[dict]:
    """Top CUDA kernels of one pLSTM-Vis-T training step (96 px / patch 8)."""
    from torch.profiler import ProfilerActivity, profile

    batch = 16 if quick else 128
    model = build("plstm_vis_t", 96, 8, "parallel").to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    x = torch.rand(batch, 3, 96, 96, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)

    def step() -> None:
        with torch.autocast("cuda", torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    _sync(device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        _sync(device)
    return top_kernels(prof)


def top_kernels(prof) -> list[dict]:
    events = prof.key_averages()
    total = sum(e.device_time_total for e in events) or 1.0
    top = sorted(events, key=lambda e: e.device_time_total, reverse=True)[:12]
    return [
        {
            "kernel": e.key[:80],
            "ms": e.device_time_total / 1000,
            "share": e.device_time_total / total,
            "calls": e.count,
        }
        for e in top
    ]


def markdown(rows: list[dict]) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        cells = []
        for k in keys:
            v = r.get(k, "")
            cells.append(
                f"{v:,.3g}"
                if isinstance(v, float) and v < 100
                else (f"{v:,.0f}" if isinstance(v, float) else str(v))
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--out", default=os.environ.get("OUT", "bench_out"))
    parser.add_argument("--cpu", action="store_true", help="the CPU table instead of the GPU one")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (with --cpu)")
    parser.add_argument("--large", action="store_true", help="also 768 px (with --cpu)")
    parser.add_argument(
        "--before", action="store_true", help="with --cpu: also the reference path (96, 192 px)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="with --cpu: runs of every cell")
    parser.add_argument(
        "--max-load", type=float, help="with --cpu: wait for a 1-min load average below this"
    )
    parser.add_argument("--max-wait", type=float, default=600, help="with --cpu: seconds")
    parser.add_argument(
        "--cell-timeout", type=float, default=1800, help="with --cpu: seconds per cell"
    )
    parser.add_argument("--quick", action="store_true", help="smaller batches (a smoke run)")
    parser.add_argument(
        "--skip",
        nargs="*",
        default=[],
        help="sections to skip: forward train profile train-profile server parity",
    )
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.cpu:
        result, text = cpu_report(args)
        tag = "cpu"
    else:
        device = torch.device("cuda")
        result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
        variants = [("deit_t", None), ("vit_t", None), ("plstm_vis_t", "parallel")]
        text = f"# {result['device']}, torch {torch.__version__}, bf16 autocast\n\n"
        if "forward" not in args.skip:
            rows = []
            for name, method in variants:
                if name == "deit_t":
                    try:
                        import timm  # noqa: F401
                    except ImportError:
                        continue
                rows.append(forward_row(name, method, device, args.quick))
            with env(PLSTM_FUSED_LAYER="0"):
                row = forward_row("plstm_vis_t", "parallel", device, args.quick)
            row["model"] += " unfused layer"
            rows.append(row)
            rows.append(forward_row("plstm_vis_t", "chunkwise", device, args.quick))
            result["forward"] = rows
            text += "## Forward\n\n" + markdown(rows) + "\n\n"
        if "train" not in args.skip:
            rows = [training_row(n, m, device, args.quick) for n, m in variants if n != "deit_t"]
            with env(PLSTM_FUSED_LAYER="0"):
                row = training_row("plstm_vis_t", "parallel", device, args.quick)
            row["model"] += " unfused layer"
            rows.append(row)
            result["train"] = rows
            text += "## Training step, 96 px / patch 8\n\n" + markdown(rows) + "\n\n"
        if "profile" not in args.skip:
            result["profile"] = kernel_profile(device, args.quick)
            text += "## Top CUDA kernels, plstm_vis_t forward 224 px\n\n"
            text += markdown(result["profile"]) + "\n\n"
        if "train-profile" not in args.skip:
            result["train profile"] = train_profile(device, args.quick)
            text += "## Top CUDA kernels, plstm_vis_t training step 96 px / patch 8\n\n"
            text += markdown(result["train profile"]) + "\n\n"
        if "server" not in args.skip:
            result["server graphs"] = server_graphs(device)
            text += "## Shipped arrow model as served (float32, CUDA-graph buckets, 96 px)\n\n"
            text += markdown(result["server graphs"]) + "\n\n"
        if "parity" not in args.skip:
            result["parity"] = shipped_parity(device)
            text += "## Shipped arrow model, 64 test images\n\n" + markdown(result["parity"]) + "\n"
        tag = result["device"].split()[-1].lower()
    (out / f"vision_{tag}.json").write_text(json.dumps(result, indent=1))
    (out / f"vision_{tag}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
