#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh), then starts the model server on the shipped models in
# model_repository/ (GPU when one is visible, else CPU). Extra arguments go to `plstm serve`
# (see `plstm serve --help`; settings also come from PLSTM_* environment variables).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
exec .venv/bin/plstm serve "$@"
