#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh), then starts the product: for now a demonstration of
# the pLSTM ops (every method checked against the loop reference, with timings).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
exec .venv/bin/plstm demo "$@"
