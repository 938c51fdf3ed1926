#!/usr/bin/env bash
# The serving benchmark of docs/BENCHMARKS.md ("Serving under load"): starts `brickserve serve` on a
# loopback port with the ~345M random-weight Llama, then for each concurrency runs bench/load_gen
# (streamed requests, Poisson arrivals, at most C in flight) and prints throughput, TTFT and
# inter-token latency. One JSON line per run goes to $BENCH_LOG_DIR/load.jsonl.
#
# Environment (all optional):
#   BUILD_DIR              Release build with brickserve and load_gen   (default: <repo>/build-bench)
#   BENCH_MODEL            model directory        (default: ${TMPDIR:-/tmp}/brickserve-bench-models/llama-345m-f32)
#   BENCH_LOG_DIR          where results go                            (default: $BUILD_DIR/bench-results/load-<time>)
#   BENCH_CONCURRENCY      concurrencies to run                        (default: "1 4 16 64")
#   BENCH_REQUESTS_PER_SLOT requests per concurrency slot (N = max(4, C * this))  (default: 2)
#   BENCH_PROMPT_TOKENS    prompt length                               (default: 64)
#   BENCH_NEW_TOKENS       output length (EOS ignored)                 (default: 64)
#   BENCH_RATE             Poisson arrivals per second                 (default: 20)
#   BENCH_REPEATS          runs per concurrency                        (default: 1)
#   BENCH_SERVER_FLAGS     extra `brickserve serve` flags  (default: "--kv-cache-tokens 16384 --max-running-requests 64")
#   BENCH_MAX_SECONDS      bound of one load_gen run                   (default: 900)
#   BENCH_LOAD_GEN_FLAGS   extra load_gen flags, e.g. "--bricks a0,a1 --churn-brick hot --churn-paths /x,/y"
#   PYTHON                 Python with numpy and torch (to make the model)   (default: /usr/bin/python3)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build-bench}"
MODEL="${BENCH_MODEL:-${TMPDIR:-/tmp}/brickserve-bench-models/llama-345m-f32}"
LOG_DIR="${BENCH_LOG_DIR:-$BUILD_DIR/bench-results/load-$(date +%Y%m%d-%H%M%S)}"
CONCURRENCY="${BENCH_CONCURRENCY:-1 4 16 64}"
PER_SLOT="${BENCH_REQUESTS_PER_SLOT:-2}"
PROMPT="${BENCH_PROMPT_TOKENS:-64}"
NEW="${BENCH_NEW_TOKENS:-64}"
RATE="${BENCH_RATE:-20}"
REPEATS="${BENCH_REPEATS:-1}"
SERVER_FLAGS="${BENCH_SERVER_FLAGS:---kv-cache-tokens 16384 --max-running-requests 64}"
MAX_SECONDS="${BENCH_MAX_SECONDS:-900}"
LOAD_GEN_FLAGS="${BENCH_LOAD_GEN_FLAGS:-}"
PYTHON="${PYTHON:-/usr/bin/python3}"

log() { echo "run_load_bench: $*" >&2; }
mkdir -p "$LOG_DIR"

if [[ ! -f "$MODEL/config.json" ]]; then
  log "writing the benchmark model to $MODEL"
  "$PYTHON" "$ROOT/bench/make_random_model.py" --dtype F32 --out "$MODEL" --skip-if-current
fi
if [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]]; then
  cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build "$BUILD_DIR" --target brickserve load_gen -j "$(nproc)" >/dev/null
BRICKSERVE="$(find "$BUILD_DIR/server" -maxdepth 1 -name brickserve -type f | head -1)"
LOAD_GEN="$BUILD_DIR/bench/load_gen"

# The server on a free loopback port; its address is the "listening on" line of its stdout.
SERVER_OUT="$LOG_DIR/server.out"
# shellcheck disable=SC2086
"$BRICKSERVE" serve --model "$MODEL" --listen 127.0.0.1:0 $SERVER_FLAGS >"$SERVER_OUT" 2>"$LOG_DIR/server.err" &
SERVER_PID=$!
trap 'kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true' EXIT
ADDRESS=""
for _ in $(seq 1 600); do
  ADDRESS="$(sed -n 's/^brickserve: listening on //p' "$SERVER_OUT")"
  [[ -n "$ADDRESS" ]] && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$LOG_DIR/server.err" >&2; log "the server exited"; exit 1; }
  sleep 0.5
done
[[ -n "$ADDRESS" ]] || { log "the server did not start listening"; exit 1; }
log "server at $ADDRESS ($SERVER_FLAGS); results in $LOG_DIR"

# Warm-up: page the weights in, start the threads and give the scheduler's step cost model mixed
# steps to learn from before anything is timed (seed 0: no timed run repeats its prompts).
"$LOAD_GEN" --target "$ADDRESS" --requests 8 --concurrency 8 --prompt-tokens "$PROMPT" --max-new-tokens 8 --seed 0 \
  --json >/dev/null

# Every load_gen run gets a seed of its own: prompts repeated from an earlier run would hit the
# server's prefix cache and flatter the later run.
seed=0
for c in $CONCURRENCY; do
  n=$(( c * PER_SLOT )); (( n >= 4 )) || n=4
  for r in $(seq 1 "$REPEATS"); do
    seed=$(( seed + 1 ))
    log "concurrency $c: $n requests (run $r of $REPEATS)"
    # shellcheck disable=SC2086
    "$LOAD_GEN" --target "$ADDRESS" --requests "$n" --concurrency "$c" --rate "$RATE" --prompt-tokens "$PROMPT" \
      --max-new-tokens "$NEW" --max-seconds "$MAX_SECONDS" --seed "$seed" --json $LOAD_GEN_FLAGS | tee -a "$LOG_DIR/load.jsonl"
  done
done

"$PYTHON" - "$LOG_DIR/load.jsonl" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"{'conc':>5} {'reqs':>5} {'ok':>4} {'out tok/s':>10} {'TTFT p50':>9} {'TTFT p99':>9} {'ITL p50':>8} {'ITL p99':>8} {'loads':>6} {'load p50':>9}")
for r in rows:
    print(f"{r['concurrency']:>5} {r['requests']:>5} {r['ok']:>4} {r['output_tokens_per_s']:>10.1f} "
          f"{r['ttft_p50_s']:>9.3f} {r['ttft_p99_s']:>9.3f} {r['itl_p50_s']:>8.3f} {r['itl_p99_s']:>8.3f} "
          f"{r.get('brick_loads', 0):>6} {r.get('brick_load_p50_s') or float('nan'):>9.3f}")
EOF
