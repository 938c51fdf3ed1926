#!/usr/bin/env bash
# The CPU benchmarks of docs/BENCHMARKS.md, end to end:
#   1. writes the random-weight ~345M Llama in F32 and BF16 (bench/make_random_model.py) unless
#      current copies exist in $BENCH_MODELS_DIR;
#   2. builds membw and engine_bench (Release) with the main CMake project; when that fails (another
#      part of the tree in flux) it falls back to bench/standalone: engine/ alone (Engine::Generate),
#      and failing that the model runtime alone (LlamaModel::Forward, no tokenizer);
#   3. waits for the machine to be quiet and measures memory read bandwidth (membw); then for each
#      model runs engine_bench (decode with a bandwidth sample before every run, prefill, peak RSS)
#      and its --kernels breakdown of a decode step; a measurement during which other processes
#      used the CPU (another engineer's build) is rerun;
#   4. prints a summary table; the full logs stay in $BENCH_LOG_DIR.
#
# Environment (all optional):
#   BUILD_DIR            main build directory                     (default: <repo>/build-bench; it is
#                        reconfigured with tests, server and CUDA off: not your everyday build)
#   BENCH_MODELS_DIR     where the generated models live          (default: ${TMPDIR:-/tmp}/brickserve-bench-models)
#   BENCH_LOG_DIR        where logs go                            (default: $BUILD_DIR/bench-results/<time>)
#   BENCH_DTYPES         models to run                            (default: "F32 BF16")
#   BENCH_RUNS           timed runs per measurement (median)      (default: 5)
#   BENCH_THREADS        engine threads, 0 = all cores            (default: 0)
#   BENCH_API            engine_bench --api: auto|engine|model    (default: auto = engine when built)
#   BENCH_STANDALONE     auto | 1 (skip the main build)           (default: auto)
#   BENCH_WAIT_QUIET_S   longest wait for an idle machine, s      (default: 600; 0 = do not wait)
#   BENCH_MAX_OTHER_CPU  rerun a measurement when other processes used more of the machine than this
#                        fraction during it                       (default: 0.05)
#   BENCH_RETRIES        how many reruns at most                  (default: 2)
#   PYTHON               Python with numpy and torch              (default: /usr/bin/python3)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build-bench}"
MODELS_DIR="${BENCH_MODELS_DIR:-${TMPDIR:-/tmp}/brickserve-bench-models}"
LOG_DIR="${BENCH_LOG_DIR:-$BUILD_DIR/bench-results/$(date +%Y%m%d-%H%M%S)}"
DTYPES="${BENCH_DTYPES:-F32 BF16}"
RUNS="${BENCH_RUNS:-5}"
THREADS="${BENCH_THREADS:-0}"
API="${BENCH_API:-auto}"
STANDALONE="${BENCH_STANDALONE:-auto}"
WAIT_QUIET_S="${BENCH_WAIT_QUIET_S:-600}"
MAX_OTHER_CPU="${BENCH_MAX_OTHER_CPU:-0.05}"
RETRIES="${BENCH_RETRIES:-2}"
PYTHON="${PYTHON:-/usr/bin/python3}"
JOBS="$(nproc)"

log() { echo "run_cpu_bench: $*" >&2; }

# Busy fraction of the whole machine over one second, from /proc/stat (user+nice+system+irq+softirq).
busy_fraction() {
  local a b
  a=($(head -1 /proc/stat))
  sleep 1
  b=($(head -1 /proc/stat))
  local busy=$(( (b[1]+b[2]+b[3]+b[6]+b[7]) - (a[1]+a[2]+a[3]+a[6]+a[7]) ))
  local total=$(( busy + (b[4]+b[5]) - (a[4]+a[5]) ))
  (( total > 0 )) || total=1
  echo $(( 100 * busy / total ))
}

# Waits until the machine has been under 10% busy for 3 seconds in a row (another engineer's build
# would otherwise halve the numbers), at most WAIT_QUIET_S seconds; then goes on regardless.
wait_quiet() {
  local what="$1" waited=0 quiet=0 pct
  (( WAIT_QUIET_S > 0 )) || return 0
  while (( quiet < 3 )); do
    pct="$(busy_fraction)"
    waited=$((waited + 1))
    if (( pct < 10 )); then quiet=$((quiet + 1)); else quiet=0; fi
    if (( waited >= WAIT_QUIET_S )); then
      log "WARNING: machine still ${pct}% busy after ${waited}s; running $what anyway (numbers will be low)"
      return 0
    fi
  done
  (( waited <= 3 )) || log "waited ${waited}s for an idle machine before $what"
}

mkdir -p "$MODELS_DIR" "$LOG_DIR"

# --- 1. models ------------------------------------------------------------------------------------
for dt in $DTYPES; do
  "$PYTHON" "$ROOT/bench/make_random_model.py" --dtype "$dt" --out "$MODELS_DIR/llama-345m-${dt,,}" --skip-if-current
done

# --- 2. build -------------------------------------------------------------------------------------
BIN=""
if [[ "$STANDALONE" != "1" ]]; then
  log "building the main project (Release) into $BUILD_DIR"
  if cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DBRICKSERVE_BUILD_TESTS=OFF \
        -DBRICKSERVE_BUILD_BENCH=ON -DBRICKSERVE_BUILD_SERVER=OFF -DBRICKSERVE_CUDA=OFF >"$LOG_DIR/build.log" 2>&1 &&
     cmake --build "$BUILD_DIR" -j"$JOBS" --target engine_bench membw >>"$LOG_DIR/build.log" 2>&1; then
    BIN="$BUILD_DIR/bench"
  else
    log "the main build failed (see $LOG_DIR/build.log; last lines below); falling back to bench/standalone"
    grep -E -m3 "Error|error:" "$LOG_DIR/build.log" >&2 || tail -3 "$LOG_DIR/build.log" >&2 || true
  fi
fi
if [[ -z "$BIN" ]]; then
  # bench/standalone with all of engine/ (Engine::Generate), else with the model runtime only.
  for with_engine in ON OFF; do
    SA_DIR="${BUILD_DIR}-standalone"
    [[ "$with_engine" == ON ]] || SA_DIR="${BUILD_DIR}-standalone-model"
    log "building bench/standalone (Release, BENCH_STANDALONE_ENGINE=$with_engine) into $SA_DIR"
    if cmake -S "$ROOT/bench/standalone" -B "$SA_DIR" -DCMAKE_BUILD_TYPE=Release \
          -DBENCH_STANDALONE_ENGINE="$with_engine" >"$LOG_DIR/build-standalone-$with_engine.log" 2>&1 &&
       cmake --build "$SA_DIR" -j"$JOBS" --target engine_bench membw >>"$LOG_DIR/build-standalone-$with_engine.log" 2>&1; then
      BIN="$SA_DIR/bench"
      break
    fi
    log "that failed too (see $LOG_DIR/build-standalone-$with_engine.log)"
    grep -E -m3 "Error|error:" "$LOG_DIR/build-standalone-$with_engine.log" >&2 || true
  done
  [[ -n "$BIN" ]] || { log "no build of the benchmarks succeeded"; exit 1; }
fi

# --- 3. measure -----------------------------------------------------------------------------------
{
  echo "date:     $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit:   $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?') $(git -C "$ROOT" status --porcelain 2>/dev/null | grep -q . && echo '(with local changes)')"
  echo "cpu:      $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores, $(lscpu | sed -n 's/^L3 cache: *//p') L3"
  echo "memory:   $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
  echo "kernel:   $(uname -r); THP $(cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null || echo '?')"
  echo "binaries: $BIN"
} | tee "$LOG_DIR/machine.txt"

# Runs "$@" (a benchmark writing a log whose RESULT/membw line carries other-CPU fields) until other
# processes used at most BENCH_MAX_OTHER_CPU of the machine during it, at most 1 + BENCH_RETRIES times.
run_clean() {
  local log_file="$1" what="$2" keys="$3"; shift 3
  local attempt worst
  for ((attempt = 0; attempt <= RETRIES; attempt++)); do
    wait_quiet "$what"
    echo
    "$@" | tee "$log_file"
    worst="$(grep -E '^(RESULT|membw:)' "$log_file" | tr ' ' '\n' | grep -E "^($keys)=" | cut -d= -f2 |
             sort -g | tail -1)"
    if awk -v w="${worst:-0}" -v m="$MAX_OTHER_CPU" 'BEGIN {exit !(w <= m)}'; then return 0; fi
    log "other processes used up to $(awk -v w="$worst" 'BEGIN {printf "%.0f%%", 100 * w}') of the machine during $what;" \
        "$( ((attempt < RETRIES)) && echo 'running it again' || echo 'keeping it (retries used up)')"
  done
}

# The bandwidth on 1 and 2 threads, for the record. The floors themselves use samples engine_bench
# takes (via --membw) right before each decode run: the host's bandwidth drifts by tens of percent.
run_clean "$LOG_DIR/membw.log" "membw" other_cpu "$BIN/membw" --gib 2 --passes 10
for dt in $DTYPES; do
  model="$MODELS_DIR/llama-345m-${dt,,}"
  run_clean "$LOG_DIR/engine_bench-${dt,,}.log" "engine_bench $dt" "foreign_cpu_decode|foreign_cpu_prefill" \
    "$BIN/engine_bench" --model "$model" --runs "$RUNS" --threads "$THREADS" --api "$API" --membw "$BIN/membw"
  wait_quiet "engine_bench --kernels $dt"
  echo
  "$BIN/engine_bench" --model "$model" --kernels --threads "$THREADS" --membw "$BIN/membw" \
    | tee "$LOG_DIR/kernels-${dt,,}.log"
done

# --- 4. summary -----------------------------------------------------------------------------------
echo
echo "=== summary (medians of $RUNS runs; floor = decode weight bytes per token / read bandwidth sampled before each run) ==="
printf "%-5s %-6s %8s %10s %9s %10s %11s %10s %10s %9s\n" dtype api "GB/s" "decode t/s" "floor t/s" "time/floor" \
  "prefill t/s" "peak RSS" "RSS/(W+KV)" "other CPU"
for dt in $DTYPES; do
  line="$(grep '^RESULT api=' "$LOG_DIR/engine_bench-${dt,,}.log")"
  get() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$line"; }
  api="$(sed -n 's/^RESULT api=\([^ ]*\).*/\1/p' <<<"$line")"
  floor_tps="$(awk -v b="$(get decode_weight_bytes)" -v bw="$(get membw_gbs)" 'BEGIN {printf "%.1f", bw * 1e9 / b}')"
  rss_mib="$(awk -v r="$(get peak_rss_bytes)" 'BEGIN {printf "%.0f MiB", r / 1048576}')"
  other="$(awk -v a="$(get foreign_cpu_decode)" -v b="$(get foreign_cpu_prefill)" 'BEGIN {printf "%.0f%%/%.0f%%", 100*a, 100*b}')"
  printf "%-5s %-6s %8.1f %10.2f %9s %9.2fx %11.1f %10s %9.3fx %9s\n" "$dt" "$api" "$(get membw_gbs)" \
    "$(get decode_tok_s)" "$floor_tps" "$(get floor_ratio)" "$(get prefill_tok_s)" "$rss_mib" "$(get rss_ratio)" "$other"
done
echo "targets: decode time <= 1.5x the floor; peak RSS <= 1.2x (weights + KV cache)."
echo "other CPU: share of the machine other processes used during the timed decode/prefill runs."
echo "logs: $LOG_DIR"
