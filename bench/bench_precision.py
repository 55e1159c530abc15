"""What bf16 autocast (``PLSTM_INFERENCE_PRECISION``) changes in the shipped models' answers.

For each shipped checkpoint: the same inputs through the model in float32 and under bf16
autocast, on the device given (the server's ``inference_precision=bfloat16`` path:
float32 weights, bf16 products). Arrow pointing: the first ``--images`` images of the fixed test
(96 px) and extrapolation (192 px) streams; solubility: its whole test set. Prints a markdown
table: accuracy in each precision, how many answers (argmax) differ, and the largest logit
difference. The GPU forms (fused Triton kernels) round differently from the CPU forms, so a GPU
run says more about the GPU default than a CPU run does.

Usage: python3 bench/bench_precision.py [--device cpu] [--images 512] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import platform
import sys
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from models import load_checkpoint  # noqa: E402

REPOSITORY = _ROOT / "model_repository"


def _compare(
    batches: Iterable[tuple[Callable[[], torch.Tensor], torch.Tensor]], device: torch.device
) -> dict[str, float]:
    """Accuracy in float32 and under bf16 autocast, differing answers, largest |Δlogit|."""
    right = {"float32": 0, "bf16": 0}
    differ = total = 0
    largest = 0.0
    with torch.inference_mode():
        for forward, labels in batches:
            exact = forward().float()
            with torch.autocast(device.type, dtype=torch.bfloat16):
                rounded = forward().float()
            labels = labels.to(device)
            right["float32"] += int((exact.argmax(-1) == labels).sum())
            right["bf16"] += int((rounded.argmax(-1) == labels).sum())
            differ += int((exact.argmax(-1) != rounded.argmax(-1)).sum())
            largest = max(largest, float((exact - rounded).abs().max()))
            total += len(labels)
    return {
        "samples": total,
        "float32": right["float32"] / total,
        "bf16": right["bf16"] / total,
        "differ": differ,
        "max_logit_diff": largest,
    }


def arrow_rows(device: torch.device, images: int) -> list[tuple[str, dict[str, float]]]:
    from training.data.arrows import make_split

    model = load_checkpoint(REPOSITORY / "arrow-pointing" / "1", device=device).model.eval()
    rows = []
    for split, batch in (("test", 64), ("extrapolation", 8)):
        data = DataLoader(Subset(make_split(split), range(images)), batch)
        batches = ((partial(model, x.to(device)), y) for x, y in data)
        rows.append((f"arrow-pointing/1, {split} (first {images})", _compare(batches, device)))
    return rows


def solubility_rows(device: torch.device) -> list[tuple[str, dict[str, float]]]:
    from training.data.molecules import SolubilityDataset, collate_graphs

    model = load_checkpoint(REPOSITORY / "solubility" / "1", device=device).model.eval()
    data = DataLoader(SolubilityDataset("test"), 64, collate_fn=collate_graphs)

    def forward(b) -> Callable[[], torch.Tensor]:
        return lambda: model(
            b.x.to(device),
            b.edge_index.to(device),
            b.batch.to(device),
            b.num_graphs,
            b.edge_attr.to(device),
        )

    batches = ((forward(b), b.labels) for b in data)
    return [("solubility/1, test (all)", _compare(batches, device))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=512, help="arrow images per stream")
    parser.add_argument("--out", type=Path, help="also write the table here")
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    rows = arrow_rows(device, args.images) + solubility_rows(device)
    lines = [
        "# bf16 autocast against float32: the shipped models' answers",
        "",
        f"{device.type} ({name or platform.machine()}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s); `python3 bench/bench_precision.py --device "
        f"{args.device} --images {args.images}`; "
        f"{_dt.datetime.now(_dt.UTC):%Y-%m-%d %H:%M} UTC.",
        "",
        "| inputs | samples | accuracy float32 | accuracy bf16 autocast | answers that differ "
        "| max abs logit difference |",
        "|---|---|---|---|---|---|",
    ]
    for label, r in rows:
        lines.append(
            f"| {label} | {int(r['samples'])} | {r['float32']:.4f} | {r['bf16']:.4f} | "
            f"{int(r['differ'])} | {r['max_logit_diff']:.4f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
