#!/usr/bin/env bash
# Packs one round of the docs/results.md runs into one call of the GPU machine (16 CPU cores,
# one GPU, a 10-minute limit): the arrow runs of ARROW_JOBS share the GPU, each with
# scripts/results_arrow.sh, while the graph runs of GRAPH_JOBS (scripts/results_solubility.sh,
# scripts/results_tu.sh; one CPU thread each) use GRAPH_PARALLEL of the CPU cores. After
# BUDGET_S seconds whatever still runs is stopped; the logs of every finished run (the scripts'
# docs/results/{arrow,solubility,tu}/ folders) go to OUT/results.tgz and each job's console to
# OUT/console.tgz (unpack the first into docs/results/).
# Usage: OUT=DIR bash scripts/results_device_round.sh
# Environment:
#   ARROW_JOBS   space-separated VARIANT:SEED or VARIANT:SEED:LR items (scripts/results_arrow.sh's
#                variants; LR default: the variant's)
#   GRAPH_JOBS   space-separated sol:SEED:SPLIT:MODEL and mutag:FOLD:MODEL items
#   GRAPH_PARALLEL (default 12), BUDGET_S (default 560), PYTHON (default python3)
#   TU_DATA      folder holding MUTAG/MUTAG_A.txt ... (the scripts would download it)
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="${OUT:?set OUT}"
budget="${BUDGET_S:-560}"
export PYTHON="${PYTHON:-python3}"
mkdir -p "$out/console" /tmp/runs/tu
[ -n "${TU_DATA:-}" ] && cp -r "$TU_DATA" /tmp/runs/tu/data

graph_job() {
  IFS=: read -r kind a b c <<< "$1"
  case "$kind" in
    sol) OMP_NUM_THREADS=1 SEEDS=$a SPLITS=$b MODELS=$c bash scripts/results_solubility.sh /tmp/runs/sol ;;
    mutag) OMP_NUM_THREADS=1 FOLDS=$a MODELS=$b bash scripts/results_tu.sh /tmp/runs/tu ;;
    *) echo "unknown graph job $1" >&2; return 2 ;;
  esac > "$OUT_CONSOLE/${1//:/-}.log" 2>&1
}
export -f graph_job
export OUT_CONSOLE="$out/console"

# every job in its own session, so that stopping it stops its runs and nothing else
start=$SECONDS
sessions=()
for job in ${ARROW_JOBS:-}; do
  IFS=: read -r variant seed lr <<< "$job"
  OMP_NUM_THREADS=2 VARIANTS="$variant" SEEDS="$seed" LR="$lr" setsid \
    bash scripts/results_arrow.sh /tmp/runs/arrow > "$out/console/arrow-${job//:/-}.log" 2>&1 &
  sessions+=($!)
done
if [ -n "${GRAPH_JOBS:-}" ]; then
  printf '%s\n' $GRAPH_JOBS |
    setsid xargs -P "${GRAPH_PARALLEL:-12}" -I{} bash -c 'graph_job "$1"' _ {} &
  sessions+=($!)
fi
while [ $((SECONDS - start)) -lt "$budget" ] && [ -n "$(jobs -r)" ]; do sleep 5; done
for session in "${sessions[@]}"; do kill -TERM -- "-$session" 2>/dev/null; done
sleep 3
echo "stopped after $((SECONDS - start)) s; still running then: $(jobs -r | wc -l) job(s)"
# one archive: the device tool brings back only a few files per call
tar czf "$out/results.tgz" -C docs/results arrow solubility tu 2>/dev/null
tar czf "$out/console.tgz" -C "$out" console && rm -rf "$out/console"
true
