#!/usr/bin/env bash
# Creates .venv/ in the project root and installs the project (with the `plstm` command) into it.
# PLSTM_TORCH: the torch requirement to install first (default torch==2.13.0, the CPU build
# that development machines keep on disk; set e.g. PLSTM_TORCH="torch>=2.4" elsewhere).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PLSTM_PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/python -m pip install -q "${PLSTM_TORCH:-torch==2.13.0}"
fi
.venv/bin/python -m pip install -q -e ".[dev]"
