#!/usr/bin/env bash
# Installs Debian's chromium for the browser tests of the web page
# (tests/app/api/test_web_browser.py) and scripts/screenshots.py, which drive it through Playwright
# (PyPI playwright, in the dev extra; `playwright install`, which downloads a browser of its own,
# is never used). Chromium needs a long list of shared libraries, so it is installed as a system
# package with apt-get (root, as CI runs) instead of being extracted into .venv/.
# scripts/test.sh runs this after scripts/setup.sh. Where it cannot install (no apt-get, not
# root, no network) it warns and carries on: the browser tests then skip, or fail when CI=true.
# PLSTM_CHROMIUM: the browser to use instead of /usr/bin/chromium (the tests read it too).
set -euo pipefail
browser="${PLSTM_CHROMIUM:-/usr/bin/chromium}"
if [ -x "$browser" ]; then
    echo "browser for the web page tests: $browser"
    exit 0
fi
warn() {
    echo "warning: could not install chromium ($1); the browser tests need it" >&2
    exit 0
}
command -v apt-get >/dev/null || warn "no apt-get"
[ "$(id -u)" -eq 0 ] || warn "not root: run 'sudo apt-get install chromium'"
export DEBIAN_FRONTEND=noninteractive
install_chromium() {
    apt-get install -y -qq chromium >/dev/null 2>&1
}
if ! install_chromium; then
    # a fresh machine has no package lists yet
    apt-get update -qq >/dev/null 2>&1 || true  # one unreachable source need not matter
    install_chromium || warn "apt-get install chromium failed"
fi
[ -x "$browser" ] || warn "chromium installed, but $browser is missing"
echo "browser for the web page tests: $browser"
