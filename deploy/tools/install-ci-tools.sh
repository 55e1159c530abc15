#!/usr/bin/env bash
# Puts the two validators of tests/deploy that PyPI does not ship into .venv/bin: promtool
# (Debian package prometheus) and nginx (Debian package nginx). Only the binaries are extracted
# from the downloaded .deb files; nothing is installed into the system and no service starts.
# scripts/test.sh runs this after scripts/setup.sh. Where apt cannot fetch them (not Debian, or
# no package lists and not root) it warns and carries on: those tests then skip, or fail when
# CI=true.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="$root/.venv/bin"

packages=()
[ -x "$bin/promtool" ] || packages+=(prometheus)
[ -x "$bin/nginx" ] || packages+=(nginx)
if [ "${#packages[@]}" -eq 0 ]; then
    exit 0
fi
warn() {
    echo "warning: could not fetch ${packages[*]} with apt ($1); tests/deploy needs them" >&2
    exit 0
}
if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
    warn "no apt-get / dpkg-deb"
fi
mkdir -p "$bin"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
download() {
    (cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root "${packages[@]}") >/dev/null 2>&1
}
if ! download; then
    # a fresh machine has no package lists yet
    [ "$(id -u)" -eq 0 ] || warn "no package lists, and not root to update them"
    apt-get update -qq >/dev/null 2>&1 || true  # one unreachable source need not matter
    download || warn "apt-get download failed"
fi
for deb in "$tmp"/*.deb; do
    dpkg-deb -x "$deb" "$tmp/root"
done
if [ -f "$tmp/root/usr/bin/promtool" ]; then
    install -m 755 "$tmp/root/usr/bin/promtool" "$bin/promtool"
fi
if [ -f "$tmp/root/usr/sbin/nginx" ]; then
    install -m 755 "$tmp/root/usr/sbin/nginx" "$bin/nginx"
fi
for name in promtool nginx; do
    if [ -x "$bin/$name" ]; then
        echo "deploy test tool: $bin/$name"
    fi
done
