#!/usr/bin/env bash
# Arrow-pointing results of docs/results.md: pLSTM-Vis-T and ViT-T trained one after the other
# with the same data (100,000 generated 96 px images), set-up (BatchNorm conv stem and head) and
# budget (EPOCHS epochs, default 8, peak lr LR, default 3e-4), each tested on the fixed held-out
# streams (10,240 images at 96 px, 10,240 at 192 px), then a table. Needs a GPU (about 7 + 3
# minutes on one H100). The pLSTM run's best/ is what model_repository/arrow-pointing/1 ships
# (bf16 weights).
# Usage: bash scripts/results_arrow.sh [RUNS_DIR (default runs/arrow)]   env EPOCHS, LR, WORKERS
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
runs="${1:-runs/arrow}"
epochs="${EPOCHS:-8}"
mkdir -p "$runs"
for model in plstm vit; do
  .venv/bin/plstm train "arrow-$model" --epochs "$epochs" --lr "${LR:-3e-4}" \
    --workers "${WORKERS:-4}" --export-dtype bf16 --log-every 200 --out "$runs/arrow-$model"
done
.venv/bin/python scripts/results_table.py "pLSTM-Vis-T=$runs/arrow-plstm" "ViT-T=$runs/arrow-vit" \
  --json "$runs/summary.json"
