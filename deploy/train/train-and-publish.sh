#!/usr/bin/env bash
# Trains a model with `plstm train` and publishes its best checkpoint as the next version of a
# model in the model repository. The compose `train` service runs it:
#
#   train-and-publish.sh EXPERIMENT MODEL [plstm train options, except --out]
#   e.g. train-and-publish.sh solubility-plstm solubility --epochs 50
#
# The run goes to a new directory $PLSTM_RUNS_DIR/<EXPERIMENT>-<UTC time>-<suffix>/ (default:
# runs/). Its best/ checkpoint is copied to $PLSTM_MODEL_REPOSITORY/<MODEL>/<highest version + 1>/
# (default: model_repository/) under a temporary name first and then renamed, so a server never
# sees a half-written version. Servers load new versions when they (re)start: README, "Deploy".
# Training options can also come from PLSTM_TRAIN_* variables (`plstm train --help`).
set -euo pipefail

usage="usage: $(basename "$0") EXPERIMENT MODEL [plstm train options, except --out]"
if [ "$#" -lt 2 ]; then
    echo "$usage" >&2
    exit 2
fi
experiment="$1"
model="$2"
shift 2
for arg in "$@"; do
    case "$arg" in
        --out | --out=*)
            echo "--out is set by this script (runs go to \$PLSTM_RUNS_DIR)" >&2
            exit 2
            ;;
    esac
done
# the model repository's rule for model names (app/serving/repository.py)
if ! [[ "$model" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]]; then
    echo "invalid model name '$model': letters, digits, '_', '.', '-' (not first)" >&2
    exit 2
fi

repository="${PLSTM_MODEL_REPOSITORY:-model_repository}"
runs="${PLSTM_RUNS_DIR:-runs}"
mkdir -p "$runs"
run_dir="$(mktemp -d "$runs/${experiment}-$(date -u +%Y%m%dT%H%M%SZ)-XXXX")"

plstm train "$experiment" --out "$run_dir" "$@"

if [ ! -f "$run_dir/best/config.json" ]; then
    echo "training wrote no checkpoint to $run_dir/best" >&2
    exit 1
fi
mkdir -p "$repository/$model"
latest=0
for dir in "$repository/$model"/*/; do
    name="$(basename "$dir")"
    if [[ "$name" =~ ^[1-9][0-9]*$ ]] && [ "$name" -gt "$latest" ]; then
        latest="$name"
    fi
done
version=$((latest + 1))
staging="$repository/$model/.publishing-$version-$$"
trap 'rm -rf "$staging"' EXIT
cp -R "$run_dir/best" "$staging"
mv -T "$staging" "$repository/$model/$version"
echo "published $run_dir/best as $model version $version in $repository"
