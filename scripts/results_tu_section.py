"""Rebuild the MUTAG section of docs/results.md (between its ``<!-- tu:begin -->`` and
``<!-- tu:end -->`` markers) and docs/results/tu/MUTAG/summary.json from the committed per-run
logs in docs/results/tu/MUTAG/<model>-fold<K>/ (written by scripts/results_tu.sh). Every number
is computed here from those files: the mean and sample standard deviation of the test accuracy
over the folds (as paper Table 3 reports them), the pLSTM − GIN differences paired by fold, and
the folds of the plan that have no log.

Usage: python scripts/results_tu_section.py [--check]
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
    table_head,
)

LOGS = ROOT / "docs" / "results" / "tu" / "MUTAG"
SUMMARY = LOGS / "summary.json"
MODELS = {
    "plstm": "pLSTM-Graph",
    "gin-xu-plain": "GIN (Xu et al.), plain",
    "gin-xu": "GIN (Xu et al.), GINE edge-label messages",
}
BASELINES = ("gin-xu-plain", "gin-xu")
FOLDS = range(10)
PAPER = {"pLSTM": "0.8512 ± 0.06", "GIN": "0.8251 ± 0.10"}
"""Paper Table 3, MUTAG (its own runs; not measured here)."""


def _run(folder: Path) -> dict[str, Any]:
    best = read_json(folder / "best_metrics.json")
    machine_file = folder / "machine.json"
    return {
        "log": str(folder.relative_to(ROOT)),
        "command": (folder / "command.txt").read_text().strip(),
        "fold": read_json(folder / "run.json")["options"]["fold"],
        "test_accuracy": best["test"]["accuracy"],
        "val_accuracy": best["validation"]["accuracy"],
        "best_epoch": best["validation"]["epoch"],
        "epochs": len(epoch_rows(folder)),
        "num_parameters": read_json(folder / "best_config.json")["num_parameters"],
        "machine": read_json(machine_file) if machine_file.is_file() else None,
    }


def collect() -> dict[str, list[dict[str, Any]]]:
    """{model: [run, ...] sorted by fold} of every committed run."""
    table = {}
    for model in MODELS:
        folders = sorted(LOGS.glob(f"{model}-fold*"))
        runs = [_run(f) for f in folders if (f / "best_metrics.json").is_file()]
        table[model] = sorted(runs, key=lambda r: r["fold"])
    return table


def _machine(runs: list[dict[str, Any]]) -> str:
    known = [r["machine"] for r in runs if r["machine"]]
    names = sorted({f"{m['cpu']}, {m['logical_cores']} cores, 1 thread" for m in known})
    return "; ".join(names) or "not recorded"


def _row(model: str, runs: list[dict[str, Any]]) -> str:
    if not runs:
        return f"| {MODELS[model]} |" + " – |" * 8
    params = ", ".join(f"{p:,}" for p in sorted({r["num_parameters"] for r in runs}))
    fold = runs[0]["fold"]
    command = runs[0]["command"].replace(f"--fold {fold}", "--fold K")
    cells = [
        MODELS[model],
        params,
        listed(runs, "fold"),
        mean_std([r["test_accuracy"] for r in runs]),
        mean_std([r["val_accuracy"] for r in runs]),
        f"{statistics.mean(r['best_epoch'] for r in runs):.0f}",
        f"`{command}`",
        _machine(runs),
        f"`docs/results/tu/MUTAG/{model}-fold{{{listed(runs, 'fold')}}}/`",
    ]
    return "| " + " | ".join(cells) + " |"


def _comparisons(table: dict[str, list[dict[str, Any]]]) -> list[str]:
    ours = {r["fold"]: r["test_accuracy"] for r in table["plstm"]}
    lines = []
    for baseline in BASELINES:
        diffs = [ours[r["fold"]] - r["test_accuracy"] for r in table[baseline] if r["fold"] in ours]
        if len(diffs) > 1:
            lines.append(
                f"- pLSTM-Graph − {MODELS[baseline]}, test accuracy paired by fold "
                f"({len(diffs)} folds): {mean_std(diffs)}"
            )
    missing = [
        f"{label} fold(s) {','.join(str(k) for k in FOLDS if k not in {r['fold'] for r in runs})}"
        for (model, label), runs in zip(MODELS.items(), table.values(), strict=True)
        if len(runs) < len(FOLDS)
    ]
    lines.append("- not run (planned: folds 0-9 of every model): " + ("; ".join(missing) or "none"))
    return lines


TEXT = (
    "Data: MUTAG in the TU format (188 graphs, 2 classes, 7 node labels, 4 edge labels), the "
    "copy inside the `grakel` 0.1.11 wheel on PyPI (the TU server cannot be reached from this "
    "project's machines). 10-fold cross-validation as in paper D.4: fold K of a stratified "
    "partition (split seed 0) is the test set, fold K+1 the validation set, the other eight the "
    "training set; the experiments' defaults (100 epochs, batch 64, AdamW lr 1e-3, weight decay "
    "0.01, 5 warm-up epochs + cosine); the test accuracy of the epoch with the best validation "
    "accuracy; one seed (0) per fold. Models as in the solubility section (pLSTM-Graph width 96, "
    "GIN of Xu et al. width 256). The paper's Table 3 reports, from its own runs, MUTAG "
    f"{PAPER['pLSTM']} for pLSTM and {PAPER['GIN']} for GIN (mean ± std over 10 folds)."
)
HEADER = (
    "| model | parameters | folds | test accuracy | validation accuracy | best epoch (mean) | "
    "command | machine | logs |"
)


def render(table: dict[str, list[dict[str, Any]]]) -> tuple[str, dict[str, Any]]:
    """The markdown section and the summary document."""
    lines = [
        *section_head(
            "TU data sets (paper Table 3): MUTAG, 10-fold cross-validation",
            "bash scripts/results_tu.sh   # the runs (CPU, one thread each)",
            "results_tu_section.py",
        ),
        paragraph(TEXT),
        "",
        *table_head(HEADER),
        *(_row(model, runs) for model, runs in table.items()),
        "",
        *_comparisons(table),
        "",
        paragraph(
            "Means ± sample standard deviations over the folds named; one test graph is about "
            "0.05 of a fold's test set (18-19 graphs). Per-run values: "
            "[`results/tu/MUTAG/summary.json`](results/tu/MUTAG/summary.json)."
        ),
    ]
    summary = {
        "rows": [
            {"model": model, **run_lists(runs, {"folds": "fold", "test_accuracy": "test_accuracy"})}
            for model, runs in table.items()
        ],
        "runs": table,
    }
    return "\n".join(lines), summary


if __name__ == "__main__":
    sys.exit(section_main("tu", __doc__, lambda: render(collect()), SUMMARY))
