#!/usr/bin/env bash
# Serves the demo model with the build from scripts/setup.sh:
#   ../shared/models/brick-tiny (a small pretrained Llama) when it is next to the checkout,
#   otherwise a random-weight Llama written once into $BUILD_DIR/demo-model (its text is noise).
#
#   scripts/serve_demo.sh [extra `brickserve serve` flags]     (LISTEN=host:port, default 127.0.0.1:50051)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build}"
BIN="$BUILD_DIR/server/brickserve"
[[ -x "$BIN" ]] || { echo "serve_demo.sh: no $BIN; run scripts/setup.sh first" >&2; exit 1; }

MODEL="$ROOT/../shared/models/brick-tiny"
if [[ -f "$MODEL/config.json" ]]; then
  MODEL="$(cd "$MODEL" && pwd)"
  echo "serve_demo.sh: serving brick-tiny, the pretrained demo model at $MODEL" >&2
else
  MODEL="$BUILD_DIR/demo-model"
  if [[ ! -f "$MODEL/model.safetensors" ]]; then
    /usr/bin/python3 "$ROOT/scripts/make_demo_model.py" --out "$MODEL" >&2
  fi
  echo "serve_demo.sh: ../shared/models/brick-tiny is absent; serving a random-weight demo model at $MODEL" \
       "(its text is noise)" >&2
fi
exec "$BIN" serve --model "$MODEL" --listen "${LISTEN:-127.0.0.1:50051}" "$@"
