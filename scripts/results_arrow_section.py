"""Rebuild the arrow-pointing section of docs/results.md (between its ``<!-- arrow:begin -->``
and ``<!-- arrow:end -->`` markers) and docs/results/arrow/summary.json from the committed
per-run logs in docs/results/arrow/<variant>[-lr<LR>]-seed<seed>/ (written by
scripts/results_arrow.sh; one row per variant and learning rate).
Every number of the section is computed here from those files: means and sample standard
deviations over the seeds, whether a run was still improving when it ended, the comparison
with the target, and the runs of the plan that have no log.

Usage: python scripts/results_arrow_section.py [--check]
  --check: exit 1 if docs/results.md or the summary would change (nothing is written)
"""

from __future__ import annotations

import re
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

LOGS = ROOT / "docs" / "results" / "arrow"
SUMMARY = LOGS / "summary.json"
VARIANTS = {
    "plstm": "pLSTM-Vis-T, corner pooling, BatchNorm head",
    "vit-mean": "ViT-T, mean pooling, BatchNorm head",
    "vit-corners": "ViT-T, corner pooling, BatchNorm head",
    "vit-mean-tokenbn": "ViT-T, mean pooling, BatchNorm on every token",
    "vit-mean-10ep": "ViT-T, mean pooling, BatchNorm head (first runs: 10 epochs)",
    "vit-corners-10ep": "ViT-T, corner pooling, BatchNorm head (first runs: 10 epochs)",
    "vit-mean-tokenbn-10ep": "ViT-T, mean pooling, token BatchNorm (first runs: 10 epochs)",
    "no-mixer": "no blocks (stem + mean pooling + BatchNorm head)",
    "cnn": "small ResNet (CNN baseline)",
    "plstm-patch-stem": "pLSTM-Vis-T with the linear patch stem",
    "plstm-plain-head": "pLSTM-Vis-T without the head BatchNorm",
    "plstm-paper": "pLSTM-Vis-T, paper set-up (patch stem, plain head)",
    "vit-paper": "ViT-T, paper set-up (patch stem, plain head, mean pooling)",
}
VITS = ("vit-mean", "vit-corners", "vit-mean-tokenbn")
SEEDED = ("plstm", *VITS)
"""The variants the target compares: seeds 0-2 planned (the others: one seed each)."""
FIRST_RUNS = ("vit-mean-10ep", "vit-corners-10ep", "vit-mean-tokenbn-10ep")
"""The first ViT runs (scripts/results_arrow.sh before its ViT budget became 12 epochs with
--patience 6), kept for their test and extrapolation accuracies; no more are planned."""
PLANNED_SEEDS = (0, 1, 2)
DEFAULT_LR = {"cnn": 1e-3}
"""Peak learning rate of a variant's main row (others: 3e-4); other rates are the lr sweep."""
FOLDER = re.compile(r"(?P<variant>.+?)(?:-lr(?P<lr>[0-9.e+-]+))?-seed(?P<seed>\d+)")
MARGIN = 0.05
"""Target: pLSTM extrapolation accuracy ≥ the best ViT variant's + MARGIN (issue 14)."""


def _run(folder: Path) -> dict[str, Any]:
    best = read_json(folder / "best_metrics.json")
    config = read_json(folder / "best_config.json")
    options = read_json(folder / "run.json")["options"]
    epochs = epoch_rows(folder)
    val = [r["val_accuracy"] for r in epochs]
    last_best = max(range(len(val)), key=lambda i: (val[i], i))
    return {
        "log": str(folder.relative_to(ROOT)),
        "command": (folder / "command.txt").read_text().strip(),
        "seed": options["seed"],
        "extrapolation_accuracy": best["extrapolation"]["accuracy"],
        "test_accuracy": best["test"]["accuracy"],
        "val_accuracy": best["validation"]["accuracy"],
        "best_epoch": best["validation"]["epoch"],
        "epochs_run": len(epochs),
        "max_epochs": options["epochs"],
        "patience": options.get("patience"),
        "improving_at_end": last_best == len(val) - 1,
        "final_train_accuracy": epochs[-1]["train_accuracy"],
        "train_samples_per_second": statistics.median(r["samples_per_second"] for r in epochs),
        "num_parameters": config["num_parameters"],
        "machine": read_json(folder / "machine.json"),
        "note": (folder / "note.txt").read_text().strip()
        if (folder / "note.txt").is_file()
        else None,
    }


def _row_key(folder: Path) -> str | None:
    """``variant`` or ``variant@lr`` (another learning rate than the variant's default) of a
    run folder; None for a folder of another name."""
    match = FOLDER.fullmatch(folder.name)
    if match is None or match["variant"] not in VARIANTS:
        return None
    lr = match["lr"]
    if lr is None or float(lr) == DEFAULT_LR.get(match["variant"], 3e-4):
        return match["variant"]
    return f"{match['variant']}@{lr}"


def _label(key: str) -> str:
    variant, _, lr = key.partition("@")
    return VARIANTS[variant] + (f", lr {lr}" if lr else "")


def collect() -> dict[str, list[dict[str, Any]]]:
    """{row key: [run, ...] sorted by seed} of every committed run: every variant (maybe
    without runs), then the learning-rate rows that have runs."""
    table: dict[str, list[dict[str, Any]]] = {variant: [] for variant in VARIANTS}
    for folder in sorted(LOGS.iterdir()):
        key = _row_key(folder) if folder.is_dir() else None
        if key is not None and (folder / "best_metrics.json").is_file():
            table.setdefault(key, []).append(_run(folder))
    return {key: sorted(runs, key=lambda r: r["seed"]) for key, runs in table.items()}


def _ending(runs: list[dict[str, Any]]) -> str:
    """How the runs ended: stopped by patience, still improving, or past their best."""
    parts = []
    for r in runs:
        if r["epochs_run"] < r["max_epochs"]:
            parts.append(f"plateau (stopped at {r['epochs_run']}/{r['max_epochs']})")
        elif r["improving_at_end"]:
            parts.append(f"still improving at {r['epochs_run']}")
        else:
            parts.append(f"best at {r['best_epoch']} of {r['epochs_run']}")
    return "; ".join(parts)


def _folders(runs: list[dict[str, Any]]) -> str:
    """The runs' log folders, seeds folded: ``docs/results/arrow/plstm-seed{0,1,2}/``."""
    first = runs[0]["log"]
    return "`" + first.rsplit("-seed", 1)[0] + f"-seed{{{listed(runs, 'seed')}}}/`"


def _row(key: str, runs: list[dict[str, Any]]) -> str:
    if not runs:
        return f"| {_label(key)} |" + " – |" * 11
    params = ", ".join(f"{p:,}" for p in sorted({r["num_parameters"] for r in runs}))
    gpus = "; ".join(sorted({str(r["machine"].get("gpu")) for r in runs}))
    cells = [
        _label(key),
        params,
        listed(runs, "seed"),
        mean_std([r["extrapolation_accuracy"] for r in runs]),
        mean_std([r["test_accuracy"] for r in runs]),
        mean_std([r["val_accuracy"] for r in runs]),
        _ending(runs),
        mean_std([r["final_train_accuracy"] for r in runs]),
        f"{statistics.mean(r['train_samples_per_second'] for r in runs):,.0f}",
        seeded_command(runs),
        gpus,
        _folders(runs),
    ]
    return "| " + " | ".join(cells) + " |"


def _notes(table: dict[str, list[dict[str, Any]]]) -> list[str]:
    """One line per distinct note (``note.txt`` of a run folder), naming its runs."""
    runs_by_note: dict[str, list[str]] = {}
    for key, runs in table.items():
        for r in runs:
            if r["note"]:
                runs_by_note.setdefault(r["note"], []).append(f"{key} seed {r['seed']}")
    return [f"- {', '.join(names)}: {note}" for note, names in runs_by_note.items()]


def _verdict(table: dict[str, list[dict[str, Any]]]) -> list[str]:
    ours = [r["extrapolation_accuracy"] for r in table["plstm"]]
    vits = {v: [r["extrapolation_accuracy"] for r in table[v]] for v in VITS if table[v]}
    if not ours or not vits:
        return ["- target: not measurable yet (no pLSTM run or no ViT run)"]
    best = max(vits, key=lambda v: statistics.mean(vits[v]))
    gap = statistics.mean(ours) - statistics.mean(vits[best])
    verdict = "met" if gap >= MARGIN else f"missed by {MARGIN - gap:.4f}"
    seeds_ok = len(ours) >= 3 and len(vits[best]) >= 3
    improving = sum(r["improving_at_end"] for r in table[best])
    caveat = ""
    if not seeds_ok:
        caveat = " (fewer than the 3 seeds the target asks for: no conclusion)"
    elif improving:
        caveat = (
            f" (but {improving} of its {len(table[best])} runs were still improving when their "
            "budget ended: that ViT is under-trained, so this alone does not settle the target)"
        )
    lines = [
        f"- pLSTM-Vis extrapolation accuracy (mean over {len(ours)} seed(s)) − the best ViT "
        f"variant's ({VARIANTS[best]}, {len(vits[best])} seed(s)): {gap:+.4f}; target "
        f"≥ +{MARGIN}: {verdict}" + caveat
    ]
    lines += _best_single_run(table, statistics.mean(ours))
    missing = []
    for variant in VARIANTS:
        if variant in FIRST_RUNS:
            continue
        done = {r["seed"] for r in table[variant]}
        planned = PLANNED_SEEDS if variant in SEEDED else PLANNED_SEEDS[:1]
        absent = [str(s) for s in planned if s not in done]
        if absent:
            missing.append(f"{variant} seed(s) {','.join(absent)}")
    lines.append(
        "- not run (planned: seeds 0-2 of pLSTM and the ViT variants, seed 0 of the others): "
        + ("; ".join(missing) if missing else "none")
    )
    return lines


def _best_single_run(table: dict[str, list[dict[str, Any]]], ours: float) -> list[str]:
    """The best extrapolation of any single ViT run (every set-up and learning rate) against
    the pLSTM mean: the bound the ViT's tuning would have to beat."""
    vit_runs = [
        (r["extrapolation_accuracy"], r["test_accuracy"], key, r["seed"])
        for key, runs in table.items()
        if key.startswith("vit")
        for r in runs
    ]
    if not vit_runs:
        return []
    extrapolation, test, key, seed = max(vit_runs)
    return [
        f"- the best single ViT run of any set-up ({_label(key)}, seed {seed}): extrapolation "
        f"{extrapolation:.4f} (test {test:.4f}); the pLSTM mean − it: {ours - extrapolation:+.4f}"
    ]


INTRO = (
    "Data: 100,000 generated training images at the ½-scale paper geometry (96 px, patch 8), "
    "5,120 validation images, and the fixed held-out streams of 10,240 test images at 96 px and "
    "10,240 extrapolation images at 192 px (twice the training size; 24×24 instead of 12×12 "
    "tokens). pLSTM and ViT variants: T size (12 blocks, width 192, 3 heads) unless they have "
    "no blocks, the convolutional stem with BatchNorm (`--stem conv-bn`) unless the row says "
    "otherwise. Every run: pixels standardised inside the model, batch 128, AdamW lr 3e-4 (the "
    "CNN 1e-3; other rates where the row says so), weight decay 0.05, one warm-up epoch + "
    "cosine to 1e-3 of the peak, bf16, CUDA-graph training on one GPU; seed S = initialisation "
    "and data order (the images are fixed). The checkpoint is the epoch with the best "
    "validation accuracy; test and extrapolation are measured once, with it. pLSTM: the recipe "
    "of the shipped `arrow-pointing/1` (8 epochs). ViT variants and the CNN: up to 12 epochs, "
    "stopped after 6 epochs without a better validation accuracy (`--patience 6`): a larger "
    "budget than the pLSTM's, since the 8-epoch ViT had not converged and its accuracy stays "
    "at chance for 4-5 epochs before it takes off."
)
SUMMARY_FIELDS = {
    "seeds": "seed",
    "extrapolation_accuracy": "extrapolation_accuracy",
    "test_accuracy": "test_accuracy",
    "val_accuracy": "val_accuracy",
}
"""The per-run values each row of summary.json lists (name: run field)."""
HEADER = (
    "| variant | parameters | seeds | extrapolation accuracy (192 px) | test accuracy (96 px) | "
    "validation accuracy | how the run ended | train accuracy, last epoch | train samples/s "
    "(median epoch) | command | GPU | logs |"
)


def render(table: dict[str, list[dict[str, Any]]]) -> tuple[str, dict[str, Any]]:
    """The markdown section and the summary document."""
    lines = [
        *section_head(
            "Arrow pointing: pLSTM-Vis-T vs ViT-T variants (96 px train, 192 px extrapolation)",
            "bash scripts/results_arrow.sh   # the runs (GPU)",
            "results_arrow_section.py",
        ),
        paragraph(INTRO),
        "",
        *table_head(HEADER),
        *(_row(key, runs) for key, runs in table.items()),
        "",
        *_verdict(table),
        *_notes(table),
        "",
        paragraph(
            "Means ± sample standard deviations over the seeds named. Runs sharing the GPU with "
            "others train more slowly; their samples/s do not compare speeds (the speed section "
            "does). Per-run values: [`results/arrow/summary.json`](results/arrow/summary.json)."
        ),
    ]
    summary = {
        "rows": [
            {"variant": key, **run_lists(runs, SUMMARY_FIELDS)} for key, runs in table.items()
        ],
        "runs": table,
    }
    return "\n".join(lines), summary


if __name__ == "__main__":
    sys.exit(section_main("arrow", __doc__, lambda: render(collect()), SUMMARY))
