#!/usr/bin/env bash
# Arrow-pointing results of docs/results.md: pLSTM-Vis-T, ViT-T and CNN variants on the same data
# (100,000 generated 96 px images; validation 5,120; the fixed held-out streams of 10,240 test
# images at 96 px and 10,240 extrapolation images at 192 px). Variants (VARIANTS, default the
# first five):
#   plstm             arrow-plstm, BatchNorm conv stem, corner pooling, BatchNorm head, 8 epochs
#                     (the recipe of the shipped arrow-pointing/1)
#   vit-mean          arrow-vit, BatchNorm conv stem, mean pooling, BatchNorm head
#   vit-corners       arrow-vit with the pLSTM's corner pooling
#   vit-mean-tokenbn  arrow-vit, mean pooling, BatchNorm on every token before pooling (its
#                     statistics do not shift when the token count grows)
#   no-mixer          arrow-vit --depth 0: stem + mean pooling + BatchNorm head, no blocks
# ablations (one seed each):
#   cnn               arrow-cnn: a small ResNet of about the same parameter count
#   plstm-patch-stem  plstm with the paper's linear patch stem
#   plstm-plain-head  plstm without the BatchNorm before the head
#   plstm-paper       plstm with both (the paper's set-up at 1/2 scale)
#   vit-paper         vit-mean with both
# The ViT and CNN variants get 12 epochs with --patience 6 (stop after 6 epochs without a better
# validation accuracy; the ViT's accuracy stays at chance for its first 4-5 epochs before it
# takes off), the pLSTM ones 8. Peak lr LR (default 3e-4, CNN 1e-3; another lr adds -lr<LR> to
# the run's folder name), seeds SEEDS (default "0 1 2"). Needs a GPU
# (one H100: ~4.5 min per pLSTM run, ~2.5 min per ViT run alone). Finished runs are skipped. Each
# run's metrics.jsonl, run.json, best/metrics.json, best/config.json (not the weights), the
# command and the machine are copied to docs/results/arrow/<name>/; then
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
vit=(arrow-vit --epochs 12 --patience 6)
plstm=(arrow-plstm --epochs 8 --export-dtype bf16 --log-every 200)
for seed in ${SEEDS:-0 1 2}; do
  for variant in ${VARIANTS:-plstm vit-mean vit-corners vit-mean-tokenbn no-mixer}; do
    case "$variant" in
      plstm) args=("${plstm[@]}") ;;
      vit-mean) args=("${vit[@]}") ;;
      vit-corners) args=("${vit[@]}" --pooling corners) ;;
      vit-mean-tokenbn) args=("${vit[@]}" --head-norm token-batch) ;;
      no-mixer) args=(arrow-vit --epochs 8 --depth 0) ;;
      cnn) args=(arrow-cnn --epochs 12 --patience 6) ;;
      plstm-patch-stem) args=("${plstm[@]}" --stem patch) ;;
      plstm-plain-head) args=("${plstm[@]}" --head-norm none) ;;
      plstm-paper) args=("${plstm[@]}" --stem patch --head-norm none) ;;
      vit-paper) args=("${vit[@]}" --stem patch --head-norm none) ;;
      *) echo "unknown variant $variant" >&2; exit 2 ;;
    esac
    default_lr=3e-4
    [ "$variant" = cnn ] && default_lr=1e-3
    lr="${LR:-$default_lr}"
    args+=(--lr "$lr" --seed "$seed")
    name="$variant-seed$seed"
    [ "$lr" = "$default_lr" ] || name="$variant-lr$lr-seed$seed"
    out="$runs/$name"
    kept="$logs/$name"
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
