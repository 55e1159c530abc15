#!/usr/bin/env bash
# Solubility results of docs/results.md: pLSTM-Graph and GIN, 5 seeds each (init + data order;
# the train/val split and the test set are fixed), default hyperparameters of
# `plstm train --help`, then a mean ± std table. Runs on the CPU in about an hour
# (one thread per run); finished runs are skipped, so it can be resumed.
# Usage: bash scripts/results_solubility.sh [RUNS_DIR (default runs/solubility)]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
runs="${1:-runs/solubility}"
mkdir -p "$runs"
for seed in 0 1 2 3 4; do
  for model in plstm gin; do
    out="$runs/$model-seed$seed"
    [ -f "$out/best/metrics.json" ] && continue
    rm -rf "$out"
    OMP_NUM_THREADS=1 .venv/bin/plstm train "solubility-$model" --seed "$seed" --out "$out"
  done
done
.venv/bin/python scripts/results_table.py "pLSTM-Graph=$runs/plstm-seed*" "GIN=$runs/gin-seed*" \
  --json "$runs/summary.json"
