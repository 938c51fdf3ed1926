#!/usr/bin/env bash
# The brick lifecycle and the sparse FFN under AddressSanitizer + LeakSanitizer: builds the server,
# the registry test and the sparse-FFN golden test with -fsanitize=address in a second build
# directory, runs those two, then the bricks and modules end-to-end tests (hot-plug under load
# included) of the main build against the sanitized server, whose non-zero exit at shutdown
# reports a leak or a memory error.
# Usage: scripts/test_asan.sh  (BUILD_DIR: the main build; ASAN_BUILD_DIR: default BUILD_DIR-asan)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
ASAN_BUILD_DIR="${ASAN_BUILD_DIR:-$BUILD_DIR-asan}"
PY=/usr/bin/python3

cmake -S "$ROOT" -B "$ASAN_BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBRICKSERVE_BUILD_BENCH=OFF -DBRICKSERVE_CUDA=OFF \
  -DCMAKE_CXX_FLAGS="-fsanitize=address -fno-omit-frame-pointer" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address" >/dev/null
cmake --build "$ASAN_BUILD_DIR" -j"$(nproc)" --target brickserve registry_test sparse_ffn_golden_test

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:exitcode=23"
"$PY" "$ROOT/tests/reference/make_lora_golden.py" --out "$ASAN_BUILD_DIR/testdata/lora_golden"
"$ASAN_BUILD_DIR/tests/bricks/registry_test"
"$PY" "$ROOT/tests/reference/make_modules_golden.py" --out "$ASAN_BUILD_DIR/testdata/modules_golden"
"$ASAN_BUILD_DIR/tests/modules/sparse_ffn_golden_test"
# The main build's client against the sanitized server (its fixture data is the main build's).
"$PY" "$ROOT/tests/reference/make_lora_golden.py" --out "$BUILD_DIR/testdata/lora_golden"
BRICKSERVE_E2E_BINARY="$ASAN_BUILD_DIR/server/brickserve" "$BUILD_DIR/tests/e2e/bricks_e2e_test"
"$PY" "$ROOT/tests/reference/make_modules_golden.py" --out "$BUILD_DIR/testdata/modules_golden"
BRICKSERVE_E2E_BINARY="$ASAN_BUILD_DIR/server/brickserve" "$BUILD_DIR/tests/e2e/modules_e2e_test"
echo "test_asan: registry, sparse FFN, bricks e2e (hot-plug) and modules e2e clean under ASan/LSan"
