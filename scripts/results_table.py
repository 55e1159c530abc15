"""Summarise finished `plstm train` runs as a markdown table: per group of runs, the mean ± std
(over the runs, sample std) of each split's accuracy (or RMSE) from ``best/metrics.json``, the
best epoch and the mean training samples/s from ``metrics.jsonl``. A run is a ``plstm train``
output folder or a folder of its committed logs (``best_metrics.json`` beside ``metrics.jsonl``).

Usage: python scripts/results_table.py LABEL=GLOB [LABEL=GLOB ...] [--json FILE]
e.g.   python scripts/results_table.py pLSTM='runs/sol/plstm-seed*' GIN='runs/sol/gin-seed*'
"""

from __future__ import annotations

import argparse
import glob
import json
import statistics
from pathlib import Path
from typing import Any


def _best_metrics(run: Path) -> Path | None:
    for path in (run / "best" / "metrics.json", run / "best_metrics.json"):
        if path.is_file():
            return path
    return None


def _run_summary(run: Path) -> dict[str, Any]:
    metrics = json.loads(_best_metrics(run).read_text())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line]
    epochs = [r for r in rows if r.get("event") == "epoch"]
    scores = {}
    for split, entry in metrics.items():
        for key in ("accuracy", "rmse"):
            if key in entry:
                scores[f"{split} {key}"] = entry[key]
    return {
        "run": str(run),
        "scores": scores,
        "best_epoch": metrics.get("validation", {}).get("epoch"),
        "epochs": len(epochs),
        "samples_per_second": statistics.mean(r["samples_per_second"] for r in epochs)
        if epochs
        else None,
    }


def _mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("groups", nargs="+", metavar="LABEL=GLOB", help="runs to pool per row")
    parser.add_argument("--json", help="also write the per-run summaries to this file")
    args = parser.parse_args()
    table: dict[str, list[dict[str, Any]]] = {}
    for group in args.groups:
        label, sep, pattern = group.partition("=")
        if not sep:
            parser.error(f"expected LABEL=GLOB, got {group!r}")
        runs = sorted(Path(p) for p in glob.glob(pattern) if _best_metrics(Path(p)) is not None)
        if not runs:
            parser.error(f"{label}: no finished runs match {pattern!r}")
        table[label] = [_run_summary(r) for r in runs]
    columns = sorted({k for runs in table.values() for r in runs for k in r["scores"]})
    print("| model | runs | " + " | ".join(columns) + " | train samples/s |")
    print("|---|---|" + "---|" * len(columns) + "---|")
    for label, runs in table.items():
        cells = [_mean_std([r["scores"][c] for r in runs if c in r["scores"]]) for c in columns]
        rates = [r["samples_per_second"] for r in runs if r["samples_per_second"]]
        rate = f"{statistics.mean(rates):.0f}" if rates else "-"
        print(f"| {label} | {len(runs)} | " + " | ".join(cells) + f" | {rate} |")
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=1) + "\n")


if __name__ == "__main__":
    main()
