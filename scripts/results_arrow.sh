#!/usr/bin/env bash
# Arrow-pointing results of docs/results.md: pLSTM-Vis-T and ViT-T variants on the same data
# (100,000 generated 96 px images; validation 5,120; the fixed held-out streams of 10,240 test
# images at 96 px and 10,240 extrapolation images at 192 px), all with the BatchNorm conv stem.
# Variants (VARIANTS, default all):
#   plstm             arrow-plstm, corner pooling, BatchNorm head, 8 epochs (the recipe of the
#                     shipped arrow-pointing/1)
#   vit-mean          arrow-vit, mean pooling, BatchNorm head
#   vit-corners       arrow-vit with the pLSTM's corner pooling
#   vit-mean-tokenbn  arrow-vit, mean pooling, BatchNorm on every token before pooling (its
#                     statistics do not shift when the token count grows)
#   no-mixer          arrow-vit --depth 0: stem + mean pooling + BatchNorm head, no blocks
# The ViT variants get 10 epochs with --patience 3 (stop after 3 epochs without a better
# validation accuracy). Peak lr LR (default 3e-4), seeds SEEDS (default "0 1 2"). Needs a GPU
# (one H100: ~7 min per pLSTM run, ~2.5 min per ViT run alone). Finished runs are skipped. Each
# run's metrics.jsonl, run.json, best/metrics.json, best/config.json (not the weights), the
# command and the machine are copied to docs/results/arrow/<variant>-seed<seed>/; then
# `python scripts/results_arrow_section.py` rebuilds the section of docs/results.md.
# Usage: bash scripts/results_arrow.sh [RUNS_DIR (default runs/arrow)]
# Environment: VARIANTS, SEEDS, LR, WORKERS (default 2), PYTHON (an interpreter with the
# project's dependencies; default: scripts/setup.sh's .venv).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source scripts/results_python.sh
runs="${1:-runs/arrow}"
logs=docs/results/arrow
vit=(arrow-vit --epochs 10 --patience 3)
for seed in ${SEEDS:-0 1 2}; do
  for variant in ${VARIANTS:-plstm vit-mean vit-corners vit-mean-tokenbn no-mixer}; do
    case "$variant" in
      plstm) args=(arrow-plstm --epochs 8 --export-dtype bf16 --log-every 200) ;;
      vit-mean) args=("${vit[@]}") ;;
      vit-corners) args=("${vit[@]}" --pooling corners) ;;
      vit-mean-tokenbn) args=("${vit[@]}" --head-norm token-batch) ;;
      no-mixer) args=(arrow-vit --epochs 8 --depth 0) ;;
      *) echo "unknown variant $variant" >&2; exit 2 ;;
    esac
    args+=(--lr "${LR:-3e-4}" --seed "$seed")
    out="$runs/$variant-seed$seed"
    kept="$logs/$variant-seed$seed"
    [ -f "$kept/best_metrics.json" ] && continue
    rm -rf "$out"
    mkdir -p "$out"
    echo "plstm train ${args[*]}" > "$out/command.txt"
    load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
    "$python" -m training.cli "${args[@]}" --workers "${WORKERS:-2}" --out "$out"
    "$python" scripts/machine_info.py "$out/machine.json" "$load_before"
    mkdir -p "$kept"
    cp "$out/metrics.jsonl" "$out/run.json" "$out/command.txt" "$out/machine.json" "$kept/"
    cp "$out/best/metrics.json" "$kept/best_metrics.json"
    cp "$out/best/config.json" "$kept/best_config.json"
  done
done
"$python" scripts/results_arrow_section.py
