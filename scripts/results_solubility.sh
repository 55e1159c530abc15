#!/usr/bin/env bash
# Solubility results of docs/results.md: pLSTM-Graph vs the GIN of Xu et al. 2019 at the same
# parameter count — with the bond features as GINE messages (`gin-xu`) and without (`gin-xu-plain`,
# the paper's GIN) — on the random split (the SDF files', duplicates removed) and on the scaffold
# split, with the experiments' default hyperparameters (`plstm train --help`). Seeds: init and
# data order; the splits are fixed. One run at a time, one CPU thread each (about 11 min per
# pLSTM run and 2 min per GIN run on a free 2-core machine); finished runs are skipped, so it can
# be resumed. Each run's metrics.jsonl, run.json, best/metrics.json, best/config.json (without
# the weights), the command and the machine are copied to docs/results/solubility/<split>/<model>-seed<seed>/, then the solubility section
# of docs/results.md and docs/results/solubility_summary.json are rebuilt from those copies.
# Usage: bash scripts/results_solubility.sh [RUNS_DIR (default runs/solubility)]
# Environment: SEEDS (default "0 1 2 3 4"), SPLITS (default "random scaffold"), MODELS (default
# "plstm gin-xu gin-xu-plain"), PYTHON (an interpreter with the project's dependencies; default:
# scripts/setup.sh's .venv).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if [ -n "${PYTHON:-}" ]; then
  python="$PYTHON"
  export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
else
  bash scripts/setup.sh
  python=.venv/bin/python
fi
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
      rm -rf "$out"
      mkdir -p "$out"
      echo "plstm train ${args[*]}" > "$out/command.txt"
      load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
      OMP_NUM_THREADS=1 "$python" -m training.cli "${args[@]}" --out "$out"
      "$python" - "$out/machine.json" "$load_before" <<'EOF'
import json, os, platform, sys

import torch

cpu = next(
    (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
    platform.processor(),
)
json.dump(
    {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "threads": 1,
        "load_average_before": sys.argv[2],
        "load_average_after": " ".join(open("/proc/loadavg").read().split()[:3]),
        "torch": torch.__version__,
    },
    open(sys.argv[1], "w"),
    indent=1,
)
EOF
      mkdir -p "$kept"
      cp "$out/metrics.jsonl" "$out/run.json" "$out/command.txt" "$out/machine.json" "$kept/"
      cp "$out/best/metrics.json" "$kept/best_metrics.json"
      cp "$out/best/config.json" "$kept/best_config.json"
    done
  done
done
"$python" scripts/results_solubility_section.py
