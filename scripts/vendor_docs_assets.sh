#!/usr/bin/env bash
# Copies the assets of the API documentation pages (/docs: Swagger UI, /redoc: ReDoc) from their
# npm packages into app/static/, with their licences, so that the pages load nothing from
# elsewhere. The files are committed; run this (it needs npm) only to change the versions below.
set -euo pipefail
SWAGGER_UI_VERSION=5.36.0
REDOC_VERSION=2.5.4
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
npm pack --silent "swagger-ui-dist@${SWAGGER_UI_VERSION}" "redoc@${REDOC_VERSION}" >/dev/null
mkdir swagger-ui redoc
tar xzf "swagger-ui-dist-${SWAGGER_UI_VERSION}.tgz" -C swagger-ui --strip-components 1
tar xzf "redoc-${REDOC_VERSION}.tgz" -C redoc --strip-components 1
out="$root/app/static"
rm -rf "$out/swagger-ui" "$out/redoc"
mkdir -p "$out/swagger-ui" "$out/redoc"
cp swagger-ui/{swagger-ui-bundle.js,swagger-ui-bundle.js.LICENSE.txt,swagger-ui.css} "$out/swagger-ui/"
cp swagger-ui/{favicon-32x32.png,LICENSE,NOTICE} "$out/swagger-ui/"
cp redoc/bundles/{redoc.standalone.js,redoc.standalone.js.LICENSE.txt} redoc/LICENSE "$out/redoc/"
printf 'swagger-ui-dist %s\nredoc %s\n' "$SWAGGER_UI_VERSION" "$REDOC_VERSION" >"$out/VERSIONS"
echo "vendored swagger-ui-dist ${SWAGGER_UI_VERSION} and redoc ${REDOC_VERSION} into ${out}"
