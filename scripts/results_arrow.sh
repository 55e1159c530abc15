#!/usr/bin/env bash
# Arrow-pointing results of docs/results.md: pLSTM-Vis-T and ViT-T trained with the same data
# (100,000 generated 96 px images) and budget (EPOCHS epochs, default 10), each tested on the
# fixed held-out streams (10,240 images at 96 px, 10,240 at 192 px), then a table. Needs a GPU
# (about 20 minutes on one H100 with both runs side by side).
# Usage: bash scripts/results_arrow.sh [RUNS_DIR (default runs/arrow)]   env EPOCHS, WORKERS
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
runs="${1:-runs/arrow}"
epochs="${EPOCHS:-10}"
mkdir -p "$runs"
pids=()
for model in plstm vit; do
  .venv/bin/plstm train "arrow-$model" --epochs "$epochs" --workers "${WORKERS:-6}" \
    --log-every 100 --out "$runs/arrow-$model" &
  pids+=("$!")
done
for pid in "${pids[@]}"; do wait "$pid"; done
.venv/bin/python scripts/results_table.py "pLSTM-Vis-T=$runs/arrow-plstm" "ViT-T=$runs/arrow-vit" \
  --json "$runs/summary.json"
