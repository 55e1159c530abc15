#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh), then runs the linter and the whole test suite.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
bash deploy/tools/install-ci-tools.sh  # promtool and nginx for tests/deploy (from Debian)
bash scripts/install-browser.sh  # chromium for the web page's browser tests (from Debian)
.venv/bin/ruff check .
# exit status 5 = no test selected (e.g. a path given in "$@" has no serial tests)
pytest_run() { .venv/bin/python -m pytest "$@" || { rc=$?; [ "$rc" -eq 5 ] || exit "$rc"; }; }
pytest_run -n "${PLSTM_TEST_WORKERS:-2}" -m "not serial" "$@"
# load and overload figures: a test running beside them on the other core would change the
# capacity they measure halfway through
pytest_run -m serial "$@"
