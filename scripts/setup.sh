#!/usr/bin/env bash
# Installs brickserve's dependencies from Debian 12 packages and builds it (Release).
#
#   scripts/setup.sh                 install (as root or via sudo) and build into ./build
#   SKIP_APT=1 scripts/setup.sh      build only
#   BUILD_DIR=/path scripts/setup.sh build elsewhere
#   SKIP_TEST_DEPS=1 scripts/setup.sh  only what building and running need (the Docker images)
#
# The Dockerfile runs this same script, so the image and a developer machine build alike.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
BUILD_TYPE="${BUILD_TYPE:-Release}"

# Build and runtime libraries, then what the tests use (reference implementations and oracles).
PACKAGES=(
  build-essential cmake pkg-config git ca-certificates
  libabsl-dev nlohmann-json3-dev libicu-dev libhwy-dev
  libopenblas-dev libopenblas0-pthread
  libgrpc++-dev libssl-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc libcivetweb-dev
)
if [[ "${SKIP_TEST_DEPS:-0}" != "1" ]]; then
  PACKAGES+=(
    libgtest-dev libgmock-dev libbenchmark-dev
    python3-torch python3-numpy python3-grpcio python3-protobuf python3-yaml
    prometheus
  )
  command -v node >/dev/null 2>&1 || PACKAGES+=(nodejs)
  command -v npm >/dev/null 2>&1 || PACKAGES+=(npm)
fi

if [[ "${SKIP_APT:-0}" != "1" ]]; then
  SUDO=""
  if [[ "$(id -u)" != "0" ]]; then
    command -v sudo >/dev/null 2>&1 || { echo "setup.sh: run as root or install sudo (or SKIP_APT=1)" >&2; exit 1; }
    SUDO="sudo"
  fi
  missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "setup.sh: installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  else
    echo "setup.sh: all Debian packages present"
  fi
fi

cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE="$BUILD_TYPE" ${CMAKE_ARGS:-}
cmake --build "$BUILD_DIR" -j"$(nproc)"
echo "setup.sh: built into $BUILD_DIR (binary: $BUILD_DIR/server/brickserve)"
