#!/usr/bin/env bash
# The GPU benchmarks (docs/GPU.md): on the GPU machine, with the bundle of scripts/gpu_bundle.sh
# carried (.gpu/); scripts/gpu_check.sh's `bench` stage runs this, or run it alone:
#
#   bench/run_gpu_bench.sh
#
#   1. a ~1.1B-parameter random Llama in BF16 (bench/make_random_model.py: hidden 2048, 16 layers, 32
#      heads, 8 KV heads, head_dim 64, FFN 5632, vocab 32000; the bundle's tokenizer), reused while
#      the machine stays up;
#   2. the GPU's memory bandwidth (bench/hf_generate_bench.py --bandwidth-only: copy and read);
#   3. engine_bench --device cuda: decode batch 1 + prefill 512 (with the decode floor at the read
#      bandwidth), then --only batch --batch 1,8,64 (N concurrent requests through the engine);
#   4. transformers generate on the same model (bench/hf_generate_bench.py), batch 1/8/64 + prefill;
#   5. engine_bench --kernels --device cuda (one decode step op by op), if time is left;
#   then a table engine vs transformers. Each step runs under `timeout` within BENCH_BUDGET_S.
#
# Environment (optional):
#   BENCH_BUDGET_S    seconds for everything           (default: 230)
#   BENCH_RESULTS     result lines + table go here     (default: $OUT/results.txt, OUT default ./gpu-out)
#   BENCH_MODELS_DIR  where the model is written       (default: /tmp/brickserve-gpu-models)
#   BENCH_RUNS        timed runs per figure (median)   (default: 3)
#   BENCH_BATCHES     concurrent requests              (default: 1,8,64)
#   BENCH_STEPS       which steps                      (default: "model membw engine batch hf kernels")
#   BS_DEVICE         engine_bench --device            (default: cuda)
#   BENCH_MODEL_ARGS  make_random_model.py shape       (default: the ~1.1B above; smaller for a CPU dry run)
#   BENCH_MODEL_NAME  the model's folder name          (default: llama-1b-bf16)
#   BENCH_BW_GIB      bandwidth test array, GiB        (default: 2)
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if (($#)); then  # no arguments: everything is set through the environment
  sed -n '2,/^set -uo/p' "$0" | sed '$d;s/^# \{0,1\}//'
  [[ "$1" == -h || "$1" == --help ]] && exit 0
  exit 2
fi
BS_GPU_DIR="${BS_GPU_DIR:-/tmp/brickserve-gpu}"
PYTHON="${PYTHON:-python3}"
log() { echo "run_gpu_bench: $*"; }
if [[ ! -f "$BS_GPU_DIR/env.sh" ]]; then
  BS_GPU_DIR="$BS_GPU_DIR" bash "$ROOT/scripts/gpu_check.sh" setup >&2 || { log "bundle setup failed"; exit 1; }
fi
# shellcheck disable=SC1091
source "$BS_GPU_DIR/env.sh"

BUDGET="${BENCH_BUDGET_S:-230}"
OUT="${OUT:-$ROOT/gpu-out}"
RESULTS="${BENCH_RESULTS:-$OUT/results.txt}"
MODELS_DIR="${BENCH_MODELS_DIR:-/tmp/brickserve-gpu-models}"
RUNS="${BENCH_RUNS:-3}"
BATCHES="${BENCH_BATCHES:-1,8,64}"
STEPS=" ${BENCH_STEPS:-model membw engine batch hf kernels} "
BS_DEVICE="${BS_DEVICE:-cuda}"
MODEL_ARGS="${BENCH_MODEL_ARGS:---hidden 2048 --layers 16 --heads 32 --kv-heads 8 --head-dim 64 --intermediate 5632 --vocab 32000}"
MODEL="$MODELS_DIR/${BENCH_MODEL_NAME:-llama-1b-bf16}"
WORK="$(mktemp -d /tmp/gpu-bench-XXXXXX)"
mkdir -p "$MODELS_DIR" "$(dirname "$RESULTS")"
: >"$RESULTS"
START=$SECONDS

# step NAME CAP CMD... : runs CMD under timeout (CAP, or what is left of the budget), output to the
# console and $WORK/NAME.log; skipped when under 15 s are left.
step() {
  local name="$1" cap="$2"
  shift 2
  local left=$((BUDGET - (SECONDS - START) - 3))
  ((cap > left)) && cap=$left
  if ((cap < 15)); then
    log "$name: SKIPPED (${left} s left of BENCH_BUDGET_S=$BUDGET)" | tee -a "$RESULTS"
    return 124
  fi
  log "$name (at most $cap s): $*"
  local t0=$SECONDS
  timeout -k 5 "$cap" "$@" 2>&1 | tee "$WORK/$name.log"
  local rc=${PIPESTATUS[0]}
  log "$name: exit $rc after $((SECONDS - t0)) s" | tee -a "$RESULTS"
  return "$rc"
}

if [[ "$STEPS" == *" model "* ]]; then
  # shellcheck disable=SC2086
  step model 90 "$PYTHON" "$ROOT/bench/make_random_model.py" --out "$MODEL" --dtype BF16 $MODEL_ARGS --max-pos 2048 \
    --tokenizer-dir "$BS_TOKENIZER_DIR" --skip-if-current || { log "no model: stopping"; exit 1; }
fi
[[ -f "$MODEL/model.safetensors" ]] || { log "no model at $MODEL"; exit 1; }

READ_GBS=0
if [[ "$STEPS" == *" membw "* ]]; then
  step membw 40 "$PYTHON" "$ROOT/bench/hf_generate_bench.py" --device "$BS_DEVICE" --bandwidth-only --runs 10 \
    --bw-gib "${BENCH_BW_GIB:-2}"
  READ_GBS="$(grep '"read_sum"' "$WORK/membw.log" | sed -n 's/.*"gbs": \([0-9.]*\).*/\1/p' | head -1)"
  READ_GBS="${READ_GBS:-0}"
fi
MEMBW=()
[[ "$READ_GBS" != 0 ]] && MEMBW=(--membw-gbs "$READ_GBS")

EB="$BS_BIN/engine_bench"
if [[ "$STEPS" == *" engine "* ]]; then
  step engine 70 env LD_LIBRARY_PATH="$BS_LD${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$EB" --model "$MODEL" \
    --device "$BS_DEVICE" --runs "$RUNS" "${MEMBW[@]}"
fi
if [[ "$STEPS" == *" batch "* ]]; then
  step batch 80 env LD_LIBRARY_PATH="$BS_LD${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$EB" --model "$MODEL" \
    --device "$BS_DEVICE" --runs "$RUNS" --only batch --batch "$BATCHES"
fi
if [[ "$STEPS" == *" hf "* ]]; then
  step hf 100 "$PYTHON" "$ROOT/bench/hf_generate_bench.py" --device "$BS_DEVICE" --model "$MODEL" --batches "$BATCHES" \
    --runs "$RUNS" --no-bandwidth
fi
if [[ "$STEPS" == *" kernels "* ]]; then
  step kernels 30 env LD_LIBRARY_PATH="$BS_LD${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$EB" --model "$MODEL" \
    --device "$BS_DEVICE" --kernels --kernel-passes 5 "${MEMBW[@]}"
fi

# Result lines and the comparison table.
cat "$WORK"/*.log 2>/dev/null | grep -E '^(RESULT|BATCH_RESULT|\{)' >>"$RESULTS"
"$PYTHON" - "$RESULTS" <<'EOF' | tee -a "$RESULTS"
import json, sys
eng, batch, hf, bw = {}, {}, {}, {}
for line in open(sys.argv[1]):
    line = line.strip()
    if line.startswith("RESULT api="):
        eng = dict(kv.split("=", 1) for kv in line.split()[1:] if "=" in kv)
    elif line.startswith("BATCH_RESULT"):
        head, _, dev = line.partition(" device=")
        r = dict(kv.split("=", 1) for kv in head.split()[1:])
        batch[int(r["batch"])] = float(r["decode_tok_s"])
    elif line.startswith("{"):
        j = json.loads(line)
        if j.get("bench") == "hf_generate" and j["what"] == "decode":
            hf[j["batch"]] = j["decode_tok_s"]
        elif j.get("bench") == "hf_generate" and j["what"] == "prefill":
            hf["prefill"] = j["tok_s"]
        elif j.get("bench") == "membw":
            bw[j["what"]] = j["gbs"]
def f(v):
    return f"{v:12.1f}" if isinstance(v, float) else f"{'-':>12}"
print("")
params = f"{int(eng['params']) / 1e9:.2f}B-parameter " if "params" in eng else ""
print(f"GPU bench: {params}Llama {eng.get('dtype', 'BF16')}; memory bandwidth copy {bw.get('copy_read_write', 0):.0f} GB/s (read+write), "
      f"read {bw.get('read_sum', 0):.0f} GB/s")
print(f"{'figure':<34}{'brickserve':>12}{'transformers':>14}{'ratio':>8}")
rows = [("decode tok/s, batch 1 (Generate)", float(eng["decode_tok_s"]) if "decode_tok_s" in eng else None, hf.get(1))]
for b in sorted(set(batch) | {k for k in hf if isinstance(k, int)}):
    rows.append((f"decode tok/s, batch {b} (concurrent)", batch.get(b), hf.get(b)))
rows.append(("prefill tok/s, 512-token prompt", float(eng["prefill_tok_s"]) if "prefill_tok_s" in eng else None,
             hf.get("prefill")))
for name, e, h in rows:
    ratio = f"{e / h:8.2f}" if e and h else f"{'-':>8}"
    print(f"{name:<34}{f(e)}{f(h):>14}{ratio}")
if "floor_ratio" in eng and float(eng.get("membw_gbs", 0)) > 0:
    print(f"decode batch 1: {float(eng['floor_ratio']):.2f}x the bandwidth floor (weights {int(eng['decode_weight_bytes']) / 2**30:.2f} GiB "
          f"at {float(eng['membw_gbs']):.0f} GB/s)")
EOF
log "done in $((SECONDS - START)) s; results in $RESULTS"
rm -rf "$WORK"
