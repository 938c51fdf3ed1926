#!/usr/bin/env bash
# The GPU run kit's one command (docs/GPU.md): on the GPU machine, from the repo root, with the bundle
# of scripts/gpu_bundle.sh carried (.gpu/):
#
#   scripts/gpu_check.sh [STAGE...]          (default: all = env conformance memcheck hf bench)
#
#   env          nvidia-smi, toolkit/PyTorch/transformers versions, glibc, the bundle's libraries
#                resolved, and a 4-token `brickserve run --device cuda` smoke test
#   conformance  the bundle's test binaries (device_conformance*, device_sampling*) with
#                BRICKSERVE_TEST_DEVICE=cuda, then cuda-fast (cuBLAS, tiled prefill attention);
#                a skipped test counts as a failure here (the GPU is there: a skip means the CUDA
#                device could not be created); ALLOW_SKIPS=1 relaxes that
#   memcheck     compute-sanitizer (SANITIZER_TOOLS, default memcheck) on `brickserve run --device
#                cuda` over two golden models (prefill + decode), then on the test binaries
#                (MEMCHECK_FILTER, a gtest filter; default: the op-level suites DeviceConformance,
#                BatchInvariance, DeviceSampling), as far as its time allows
#   hf           tests/reference/hf_transformers_check.py: the golden cases and a transformers-written
#                Llama (F32, BF16), brickserve --device cuda against transformers' logits and tokens
#   bench        bench/run_gpu_bench.sh: a ~1.1B random BF16 Llama, engine_bench --device cuda
#                (decode batch 1/8/64, prefill, kernel breakdown) and transformers generate
#   setup        only unpack the bundle and write $BS_GPU_DIR/env.sh (every stage does this first)
#
# Logs go to $OUT (the device tool sets it; default ./gpu-out): summary.txt, one log per stage and
# results.txt (the bench's result lines): 7 files at most (the tool brings back 8). Every stage runs under `timeout`;
# the whole run stays within TOTAL_S seconds (default 540) and prints each stage's time.
#
# Environment (optional):
#   BUNDLE_DIR  the carried bundle            (default: <repo>/.gpu)
#   BS_GPU_DIR  where it is unpacked          (default: /tmp/brickserve-gpu)
#   TOTAL_S     budget of the whole run, s    (default: 540)
#   T_ENV T_CONFORMANCE T_MEMCHECK T_HF T_BENCH   per-stage caps, s (default: 45 100 75 110 230)
#   GTEST_FILTER_CONFORMANCE  gtest filter of the conformance stage (default: *)
#   ALLOW_SKIPS, MEMCHECK_FILTER, SANITIZER_TOOLS, HF_DEVICES (default: $BS_DEVICE)
#   BS_DEVICE   the brickserve device of env/hf/bench (default: cuda; cpu dry-runs the kit without a GPU)
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SELF="$ROOT/scripts/gpu_check.sh"
BUNDLE_DIR="${BUNDLE_DIR:-$ROOT/.gpu}"
BS_GPU_DIR="${BS_GPU_DIR:-/tmp/brickserve-gpu}"
OUT="${OUT:-$ROOT/gpu-out}"
PYTHON="${PYTHON:-python3}"
BS_DEVICE="${BS_DEVICE:-cuda}"
export BUNDLE_DIR BS_GPU_DIR OUT PYTHON BS_DEVICE

log() { echo "gpu_check: $*" >&2; }
die() { printf 'gpu_check: ERROR: %b\n' "$*" >&2; exit 1; }

# --- setup: unpack, link the build paths baked into the tests, find the libraries ------------------
setup() {
  local ar="$BUNDLE_DIR/bundle.tar.xz"
  [[ -f "$ar" ]] || die "no $ar: build and pack here first (scripts/gpu_bundle.sh BUILD_DIR), then carry [\".gpu\"]"
  local stamp
  stamp="$(stat -c '%s-%Y' "$ar" "$BUNDLE_DIR/brick-tiny.tar.xz" 2>/dev/null | tr '\n' ' ')$BUNDLE_DIR"
  if [[ "$(cat "$BS_GPU_DIR/.stamp" 2>/dev/null)" != "$stamp" ]]; then
    rm -rf "$BS_GPU_DIR"
    mkdir -p "$BS_GPU_DIR"
    unpack() {  # archive dir
      if command -v xz >/dev/null; then tar -C "$2" -xJf "$1"
      else "$PYTHON" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$1" "$2"; fi
    }
    unpack "$ar" "$BS_GPU_DIR" || die "cannot unpack $ar"
    if [[ -f "$BUNDLE_DIR/brick-tiny.tar.xz" ]]; then
      mkdir -p "$BS_GPU_DIR/brick-tiny"
      unpack "$BUNDLE_DIR/brick-tiny.tar.xz" "$BS_GPU_DIR/brick-tiny" || die "cannot unpack brick-tiny.tar.xz"
    fi
    echo "$stamp" >"$BS_GPU_DIR/.stamp"
  fi
  if [[ -f "$BS_GPU_DIR/env.sh" ]]; then  # set up already (by an earlier stage of this bundle)
    # shellcheck disable=SC1091
    source "$BS_GPU_DIR/env.sh"
    return 0
  fi
  # shellcheck disable=SC1091
  source "$BS_GPU_DIR/manifest.env"

  # The tests look for their data at the absolute paths of the build machine (tests/CMakeLists.txt:
  # BRICKSERVE_TEST_DATA_DIR, BRICKSERVE_SHARED_DIR): point those paths at the bundle (we are root).
  local fixture
  for fixture in golden lora_golden; do
    [[ -n "$(ls -A "$BS_GPU_DIR/testdata/$fixture" 2>/dev/null)" ]] && continue
    log "no $fixture in the bundle: writing it (tests/reference/make_${fixture}.py)"
    "$PYTHON" "$ROOT/tests/reference/make_${fixture}.py" --out "$BS_GPU_DIR/testdata/$fixture" >&2 ||
      log "WARNING: make_${fixture}.py failed: tests that need it will skip"
  done
  link_to() {  # path target
    if [[ -e "$1" || -L "$1" ]]; then
      [[ "$(readlink -f "$1")" == "$(readlink -f "$2")" ]] || log "note: $1 exists; left as it is"
      return 0
    fi
    mkdir -p "$(dirname "$1")" && ln -s "$2" "$1" || log "WARNING: cannot link $1 -> $2"
  }
  if [[ -d "$BUNDLE_BUILD_DIR" && ! -e "$BUNDLE_TEST_DATA_DIR" ]]; then
    log "note: a dry run on the build machine: linking $BUNDLE_TEST_DATA_DIR to the unpacked bundle's testdata"
    log "      (rm $BUNDLE_TEST_DATA_DIR afterwards: ctest would write its fixtures through the link)"
  fi
  link_to "$BUNDLE_TEST_DATA_DIR" "$BS_GPU_DIR/testdata"
  [[ -d "$BS_GPU_DIR/brick-tiny" ]] && link_to "$BUNDLE_SHARED_DIR/models/brick-tiny" "$BS_GPU_DIR/brick-tiny"

  # Library path for our binaries only (never exported: PyTorch must keep the system libstdc++).
  local ld="$BS_GPU_DIR/lib" sys_cxx
  sys_cxx="$(ldconfig -p 2>/dev/null | awk '/libstdc\+\+\.so\.6 .*x86-64/ {print $NF; exit}')"
  if [[ -z "$sys_cxx" || "$BUNDLE_GLIBCXX_MAX" == unknown ]] ||
     ! grep -qa "GLIBCXX_$BUNDLE_GLIBCXX_MAX" "$sys_cxx" 2>/dev/null; then
    ld="$ld:$BS_GPU_DIR/lib-cxx"
  fi
  # The CUDA toolkit's libraries (cuBLAS): wherever this image keeps them.
  local lib dir
  for lib in $BUNDLE_CUDA_LIBS; do
    [[ "$lib" == libcuda.so* ]] && continue  # the driver: the loader finds it
    ldconfig -p 2>/dev/null | grep -q "^\s*$lib " && continue
    dir=""
    for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-*/lib64 \
             /usr/local/nvidia/lib64 /usr/lib/x86_64-linux-gnu; do
      [[ -e "$d/$lib" ]] && { dir="$d"; break; }
    done
    if [[ -z "$dir" ]]; then  # pip's nvidia-* wheels next to PyTorch
      dir="$(timeout 30 find /usr/local /opt /usr/lib /root -name "$lib" 2>/dev/null | head -1)"
      dir="${dir%/*}"
    fi
    if [[ -n "$dir" ]]; then
      [[ ":$ld:" == *":$dir:"* ]] || ld="$ld:$dir"
    else
      log "WARNING: $lib not found on this machine"
    fi
  done
  {
    echo "# written by scripts/gpu_check.sh setup"
    cat "$BS_GPU_DIR/manifest.env"
    echo "export BS_GPU_DIR='$BS_GPU_DIR'"
    echo "export BS_LD='$ld'"
    echo "export BS_BIN='$BS_GPU_DIR/bin'"
    echo "export BS_TESTS_DIR='$BS_GPU_DIR/tests'"
    echo "export BS_TESTDATA='$BS_GPU_DIR/testdata'"
    echo "export BS_TOKENIZER_DIR='$BS_GPU_DIR/tokenizer'"
    echo "export BS_BRICK_TINY='$([[ -d "$BS_GPU_DIR/brick-tiny" ]] && echo "$BS_GPU_DIR/brick-tiny")'"
    # The CUDA backend plugin: found through this variable by every binary (engine/backend/cuda_plugin.h).
    [[ -n "${BUNDLE_CUDA_PLUGIN:-}" ]] && echo "export BRICKSERVE_CUDA_PLUGIN='$BS_GPU_DIR/lib/$BUNDLE_CUDA_PLUGIN'"
    echo 'bs_run() { LD_LIBRARY_PATH="$BS_LD${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$@"; }'
  } >"$BS_GPU_DIR/env.sh.partial"
  # shellcheck disable=SC1091
  source "$BS_GPU_DIR/env.sh.partial"
  local f missing=""
  for f in "$BS_BIN"/* "$BS_TESTS_DIR"/* ${BRICKSERVE_CUDA_PLUGIN:+"$BRICKSERVE_CUDA_PLUGIN"}; do
    [[ -f "$f" ]] || continue
    missing+="$(bs_run ldd "$f" 2>&1 | grep 'not found' | sed "s|^|$(basename "$f"): |")"
  done
  [[ -z "$missing" ]] || die "libraries not found for the bundle's binaries:\n$missing"
  mv "$BS_GPU_DIR/env.sh.partial" "$BS_GPU_DIR/env.sh"
  log "bundle ready in $BS_GPU_DIR (LD path for our binaries: $BS_LD)"
}

# --- stages ---------------------------------------------------------------------------------------
GOLDEN_SMOKE=(llama_gqa_bf16 qwen2_bias_tied_f32)

stage_env() {
  set -x
  nvidia-smi
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv
  nvcc --version 2>/dev/null | tail -2
  command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer
  ldd --version | head -1
  { set +x; } 2>/dev/null
  echo "bundle: $BUNDLE_CREATED, git $BUNDLE_GIT, needs glibc $BUNDLE_GLIBC_MAX, GLIBCXX $BUNDLE_GLIBCXX_MAX;" \
       "CUDA linked: $BUNDLE_CUDA_LINKED ($BUNDLE_CUDA_ARCHITECTURES); expects: $BUNDLE_CUDA_LIBS"
  echo "binaries: $BUNDLE_BINS; tests: ${BUNDLE_TESTS:-none}; BS_LD=$BS_LD"
  "$PYTHON" - <<'EOF'
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
try:
    import transformers
    print("transformers", transformers.__version__)
except ImportError as e:
    print("transformers MISSING:", e)
EOF
  echo "CUDA plugin: ${BRICKSERVE_CUDA_PLUGIN:-none (CUDA linked into the binaries, or a CPU build)}"
  bs_run ldd "${BRICKSERVE_CUDA_PLUGIN:-$BS_BIN/brickserve}" | grep -E 'cublas|cudart|libcuda|lib-cxx|stdc\+\+' || true
  local model="$BS_TESTDATA/golden/${GOLDEN_SMOKE[0]}"
  echo "+ brickserve run --device $BS_DEVICE (smoke, $model)"
  bs_run timeout 60 "$BS_BIN/brickserve" run --model "$model" --device "$BS_DEVICE" --prompt-ids 1,20,30,40,50 \
    --no-special-tokens --max-new-tokens 4 --ignore-eos --show-ids --stats
}

gtest_counts() {  # json -> "tests failures skipped"
  "$PYTHON" - "$1" <<'EOF'
import json, sys
try:
    j = json.load(open(sys.argv[1]))
except Exception:
    print("0 0 0"); sys.exit()
tests = fails = skips = 0
for s in j.get("testsuites", []):
    for t in s.get("testsuite", []):
        tests += 1
        fails += 1 if t.get("failures") else 0
        skips += 1 if t.get("result") == "SKIPPED" else 0
print(tests, fails, skips)
EOF
}

# cuda: the batch-invariant kernels (the default); cuda-fast: cuBLAS and the tiled prefill attention.
CONFORMANCE_DEVICES="${BRICKSERVE_TEST_DEVICE:-cuda cuda-fast}"

stage_conformance() {
  local t dev rc=0 any=0
  for dev in $CONFORMANCE_DEVICES; do
  for t in "$BS_TESTS_DIR"/*; do
    [[ -x "$t" ]] || continue
    any=1
    local name json counts
    name="$(basename "$t")"
    json="$(mktemp /tmp/gtest-XXXXXX.json)"
    echo "=== $name (BRICKSERVE_TEST_DEVICE=$dev)"
    local t0=$SECONDS
    BRICKSERVE_TEST_DEVICE="$dev" bs_run timeout -k 5 "$(left)" "$t" \
      --gtest_filter="${GTEST_FILTER_CONFORMANCE:-*}" --gtest_output="json:$json" --gtest_color=no
    local trc=$?
    counts="$(gtest_counts "$json")"
    read -r n f s <<<"$counts"
    echo "=== $name ($dev): exit $trc, $n tests, $f failed, $s skipped, $((SECONDS - t0)) s"
    ((trc == 0)) || rc=1
    if ((s > 0)) && [[ "${ALLOW_SKIPS:-0}" != 1 ]]; then
      echo "=== $name: $s tests SKIPPED on a GPU machine: counted as a failure (ALLOW_SKIPS=1 to accept)"
      rc=1
    fi
  done
  done
  ((any)) || { echo "no test binaries in the bundle (BUNDLE_TESTS when packing)"; return 3; }
  return $rc
}

# Seconds left to this stage (each command inside gets them, so the stage's log says what was cut).
left() { local l=$((STAGE_DEADLINE - SECONDS)); ((l < 5)) && l=5; echo "$l"; }
# The op-level tests; the whole model runs under the sanitizer through brickserve above them.
MEMCHECK_FILTER="${MEMCHECK_FILTER:-DeviceConformance.*:BatchInvariance.*:DeviceSampling.*}"

stage_memcheck() {
  local cs rc=0 tool
  cs="$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)"
  [[ -x "$cs" ]] || { echo "compute-sanitizer not found"; return 3; }
  for tool in ${SANITIZER_TOOLS:-memcheck}; do
    local m
    for m in "${GOLDEN_SMOKE[@]}"; do
      echo "=== compute-sanitizer --tool $tool: brickserve run --device $BS_DEVICE ($m: 40-token prompt, 8 new)"
      local ids
      ids="$("$PYTHON" -c 'import json,sys; print(",".join(map(str, json.load(open(sys.argv[1]))["prompt_ids"])))' \
        "$BS_TESTDATA/golden/$m/reference.json")"
      bs_run timeout -k 5 "$(left)" "$cs" --tool "$tool" --error-exitcode 99 --print-limit 20 "$BS_BIN/brickserve" run \
        --model "$BS_TESTDATA/golden/$m" --device "$BS_DEVICE" --prompt-ids "$ids" --no-special-tokens --max-new-tokens 8 \
        --ignore-eos --show-ids || { r=$?; rc=1; echo "=== exit $r (124: cut at the stage's time limit)"; }
    done
    local t
    for t in "$BS_TESTS_DIR"/*; do
      [[ -x "$t" ]] || continue
      echo "=== compute-sanitizer --tool $tool: $(basename "$t") --gtest_filter=$MEMCHECK_FILTER"
      BRICKSERVE_TEST_DEVICE="${BRICKSERVE_TEST_DEVICE:-cuda}" bs_run timeout -k 5 "$(left)" "$cs" --tool "$tool" \
        --error-exitcode 99 --print-limit 20 "$t" --gtest_filter="$MEMCHECK_FILTER" --gtest_brief=1 --gtest_color=no ||
        { r=$?; rc=1; echo "=== exit $r (124: cut at the stage's time limit)"; }
    done
  done
  return $rc
}

stage_hf() {
  "$PYTHON" -u "$ROOT/tests/reference/hf_transformers_check.py" --brickserve "$BS_BIN/brickserve" \
    --ld-library-path "$BS_LD" --tokenizer-dir "$BS_TOKENIZER_DIR" --work /tmp/brickserve-hf-check \
    --devices "${HF_DEVICES:-$BS_DEVICE}" --golden "$BS_TESTDATA/golden"
}

stage_bench() {
  BENCH_BUDGET_S="${STAGE_LIMIT:-230}" BENCH_RESULTS="$OUT/results.txt" bash "$ROOT/bench/run_gpu_bench.sh"
}

# --- driver ---------------------------------------------------------------------------------------
if [[ "${1:-}" == __stage ]]; then  # one stage, under the parent's timeout
  STAGE_DEADLINE=$((SECONDS + ${STAGE_LIMIT:-600}))
  setup
  "stage_$2"
  exit $?
fi

STAGES=("$@")
((${#STAGES[@]})) || STAGES=(all)
[[ " ${STAGES[*]} " == *" all "* ]] && STAGES=(env conformance memcheck hf bench)
for s in "${STAGES[@]}"; do
  case "$s" in env|conformance|memcheck|hf|bench|setup) ;; -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d;s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown stage $s (env conformance memcheck hf bench setup all)" ;; esac
done
mkdir -p "$OUT"
START=$SECONDS
TOTAL_S="${TOTAL_S:-540}"
declare -A CAP=([env]="${T_ENV:-45}" [conformance]="${T_CONFORMANCE:-100}" [memcheck]="${T_MEMCHECK:-75}"
                [hf]="${T_HF:-110}" [bench]="${T_BENCH:-230}")
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"
t0=$SECONDS
setup 2>&1 | tee -a "$SUMMARY" >&2
((PIPESTATUS[0] == 0)) || { echo "setup FAILED (see above)" | tee -a "$SUMMARY"; exit 1; }
echo "setup: $((SECONDS - t0)) s" | tee -a "$SUMMARY"
[[ " ${STAGES[*]} " == *" setup "* ]] && exit 0

overall=0
for s in "${STAGES[@]}"; do
  [[ "$s" == setup ]] && continue
  left=$((TOTAL_S - (SECONDS - START) - 10))
  limit=${CAP[$s]}
  ((left < limit)) && limit=$left
  if ((limit < 20)); then
    printf '%-12s SKIPPED (%d s left of TOTAL_S=%d)\n' "$s" "$left" "$TOTAL_S" | tee -a "$SUMMARY"
    overall=1
    continue
  fi
  log "stage $s (at most $limit s) -> $OUT/$s.log"
  t0=$SECONDS
  STAGE_LIMIT=$((limit - 10)) timeout -k 10 "$limit" bash "$SELF" __stage "$s" >"$OUT/$s.log" 2>&1
  rc=$?
  dt=$((SECONDS - t0))
  case $rc in
    0) status=PASS ;;
    3) status="NOTHING TO RUN" ;;
    124|137) status="TIMEOUT after $limit s"; overall=1 ;;
    *) status="FAIL (exit $rc)"; overall=1 ;;
  esac
  printf '%-12s %-22s %4d s   log %s\n' "$s" "$status" "$dt" "$OUT/$s.log" | tee -a "$SUMMARY"
  # What matters of each log, here (the tool returns the output's tail).
  case "$s" in
    hf) sed -n '/^SUMMARY hf_transformers_check/,$p' "$OUT/$s.log" | cut -c1-300 | tail -70 ;;
    bench) grep -E '^run_gpu_bench: .*(exit|SKIPPED)' "$OUT/$s.log"; sed -n '/^GPU bench:/,$p' "$OUT/results.txt" 2>/dev/null ;;
    conformance) grep -E '^(===|\[  FAILED  \])' "$OUT/$s.log" | tail -40 ;;
    memcheck) grep -E '^(===|========= (ERROR SUMMARY|Invalid|Program hit))' "$OUT/$s.log" | tail -40 ;;
  esac
  [[ "$status" == PASS ]] || { echo "--- last lines of $s.log:"; tail -25 "$OUT/$s.log"; }
  # Keep every log under the tool's 16 MiB per file.
  if (($(stat -c %s "$OUT/$s.log") > 8388608)); then
    tail -c 8000000 "$OUT/$s.log" >"$OUT/$s.log.tmp" && mv "$OUT/$s.log.tmp" "$OUT/$s.log"
  fi
done
echo "total: $((SECONDS - START)) s" | tee -a "$SUMMARY"
echo "=== summary ($SUMMARY)"
cat "$SUMMARY"
exit $overall
