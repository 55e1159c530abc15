#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh), then runs the linter and the whole test suite.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
bash deploy/tools/install-ci-tools.sh  # promtool and nginx for tests/deploy (from Debian)
bash scripts/install-browser.sh  # chromium for the web page's browser tests (from Debian)
.venv/bin/ruff check .
.venv/bin/python -m pytest -n "${PLSTM_TEST_WORKERS:-2}" "$@"
