#!/usr/bin/env bash
# Solubility results of docs/results.md: pLSTM-Graph vs the GIN of Xu et al. 2019 at the same
# parameter count — with the bond features as GINE messages (`gin-xu`) and without (`gin-xu-plain`,
# the paper's GIN) — on the random split (the SDF files', duplicates removed) and on the scaffold
# split, with the experiments' default hyperparameters (`plstm train --help`). Seeds: init and
# data order; the splits are fixed. One run at a time, one CPU thread each (on the 2-core
# development machine under a load of about 10: ~20 min per pLSTM run, ~10 min per GIN run).
# Finished runs are skipped and an interrupted one resumes from its last epoch. Each run's
# metrics.jsonl, run.json, best/metrics.json, best/config.json (not the weights), the command
# and the machine are copied to docs/results/solubility/<split>/<model>-seed<seed>/, then the
# solubility section of docs/results.md and docs/results/solubility/summary.json are rebuilt
# from those copies.
# Usage: bash scripts/results_solubility.sh [RUNS_DIR (default runs/solubility)]
# Environment: SEEDS (default "0 1 2 3 4"), SPLITS (default "random scaffold"), MODELS (default
# "plstm gin-xu gin-xu-plain"), PYTHON (an interpreter with the project's dependencies; default:
# scripts/setup.sh's .venv).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source scripts/results_python.sh
runs="${1:-runs/solubility}"
logs=docs/results/solubility
for seed in ${SEEDS:-0 1 2 3 4}; do
  for split in ${SPLITS:-random scaffold}; do
    for model in ${MODELS:-plstm gin-xu gin-xu-plain}; do
      case "$model" in
        plstm) args=(solubility-plstm) ;;
        gin-xu) args=(solubility-gin-xu) ;;
        gin-xu-plain) args=(solubility-gin-xu --no-edge-features) ;;
        *) echo "unknown model $model" >&2; exit 2 ;;
      esac
      args+=(--split "$split" --seed "$seed")
      out="$runs/$split/$model-seed$seed"
      kept="$logs/$split/$model-seed$seed"
      [ -f "$kept/best_metrics.json" ] && continue
      load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
      if [ -f "$out/last/state.json" ] && [ -f "$out/command.txt" ]; then
        # an interrupted run goes on from its last epoch (same weights as an uninterrupted one)
        OMP_NUM_THREADS=1 "$python" -m training.cli --resume "$out"
      else
        rm -rf "$out"
        mkdir -p "$out"
        echo "plstm train ${args[*]}" > "$out/command.txt"
        OMP_NUM_THREADS=1 "$python" -m training.cli "${args[@]}" --out "$out"
      fi
      OMP_NUM_THREADS=1 "$python" scripts/machine_info.py "$out/machine.json" "$load_before"
      mkdir -p "$kept"
      cp "$out/metrics.jsonl" "$out/run.json" "$out/command.txt" "$out/machine.json" "$kept/"
      cp "$out/best/metrics.json" "$kept/best_metrics.json"
      cp "$out/best/config.json" "$kept/best_config.json"
    done
  done
done
"$python" scripts/results_solubility_section.py
