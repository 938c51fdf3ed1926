#!/usr/bin/env python3
"""Hugging Face transformers `generate` speed on a model directory: the baseline for
`engine_bench --device cuda` (docs/GPU.md), plus the GPU's memory bandwidth (the decode floor).

One JSON line per measurement on stdout (progress on stderr):

  decode   batch B of random prompts of --prompt tokens, --new tokens each, greedy, min_new_tokens =
           max_new_tokens so EOS never ends it early; one generate call per run.
           tok_s         = B * new / time of the call (prefill included)
           decode_tok_s  = B * (new - 1) / (time of the call - time of the same call with 1 new token),
                           engine_bench's definition: the steps after the first token
           per_request_tok_s = decode_tok_s / B
  prefill  batch 1, a --prefill-tokens prompt, max_new_tokens 1: tok_s = prompt / time (engine_bench's
           "prefill tok/s": prompt / time to first token)
  membw    a large device-to-device copy: gbs = (bytes read + bytes written) / time; and a read-only
           estimate (a sum over the same array: bytes read / time), the figure to pass to
           `engine_bench --membw-gbs`

Each figure is the median of --runs timed runs after one warm-up. Model in BF16 (--dtype), eager
PyTorch (no torch.compile, no static cache): the plain `generate` a user gets.

  python3 bench/hf_generate_bench.py --model DIR [--batches 1,8,64] [--runs 3]
  python3 bench/hf_generate_bench.py --bandwidth-only
"""
import argparse
import json
import statistics
import sys
import time

import torch


def emit(rec):
    print(json.dumps(rec, sort_keys=True), flush=True)


def note(msg):
    print(f"hf_generate_bench: {msg}", file=sys.stderr, flush=True)


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device):
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def bandwidth(device, gib, runs):
    n = int(gib * (1 << 30)) // 4
    x = torch.empty(n, dtype=torch.float32, device=device).fill_(1.0)
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
        x.sum()
    copy_s = [timed(lambda: y.copy_(x), device) for _ in range(runs)]
    read_s = [timed(lambda: x.sum(), device) for _ in range(runs)]
    nbytes = n * 4
    c, r = statistics.median(copy_s), statistics.median(read_s)
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu"
    emit({"bench": "membw", "what": "copy_read_write", "device": name, "bytes": 2 * nbytes, "median_s": c,
          "gbs": 2 * nbytes / c / 1e9, "runs": runs})
    emit({"bench": "membw", "what": "read_sum", "device": name, "bytes": nbytes, "median_s": r,
          "gbs": nbytes / r / 1e9, "runs": runs})
    del x, y
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def load_model(path, dtype, device, attn):
    try:
        import transformers
        from transformers import AutoModelForCausalLM
    except ImportError as e:
        note(f"transformers is not installed ({e}); it is on the GPU machine's python3 (docs/GPU.md)")
        sys.exit(2)
    transformers.logging.set_verbosity_error()
    kw = {}
    if attn:
        kw["attn_implementation"] = attn
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kw)
    except TypeError:  # transformers before `dtype` (4.56): torch_dtype
        model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=dtype, **kw)
    if next(model.parameters()).dtype != dtype:  # an old version may have taken `dtype` as a config field
        model = model.to(dtype)
    return model.to(device).eval(), transformers.__version__


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="Hugging Face model directory (bench/make_random_model.py)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="BF16", choices=["BF16", "F16", "F32"])
    ap.add_argument("--batches", default="1,8,64")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--prefill-tokens", type=int, default=512)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--attn", default=None, help="attn_implementation (default: transformers' own, sdpa)")
    ap.add_argument("--bandwidth-only", action="store_true")
    ap.add_argument("--no-bandwidth", action="store_true")
    ap.add_argument("--bw-gib", type=float, default=2.0, help="array size of the bandwidth test")
    a = ap.parse_args()
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        note("torch sees no CUDA device")
        return 2
    if not a.no_bandwidth:
        bandwidth(a.device, a.bw_gib, max(a.runs, 10))
    if a.bandwidth_only:
        return 0
    if not a.model:
        ap.error("--model is required (or --bandwidth-only)")
    dtype = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}[a.dtype]
    t0 = time.perf_counter()
    model, tf_version = load_model(a.model, dtype, a.device, a.attn)
    note(f"loaded {a.model} in {time.perf_counter() - t0:.1f} s (transformers {tf_version}, torch {torch.__version__})")
    vocab = model.config.vocab_size
    eos = model.config.eos_token_id if model.config.eos_token_id is not None else 2
    if isinstance(eos, list):
        eos = eos[0]
    gen = torch.Generator().manual_seed(1234)
    common = {"model": a.model, "dtype": a.dtype, "transformers": tf_version, "torch": torch.__version__,
              "device": torch.cuda.get_device_name(0) if a.device.startswith("cuda") else a.device}

    def generate(batch, prompt_len, new):
        ids = torch.randint(3, min(vocab, 8192), (batch, prompt_len), generator=gen).to(a.device)
        mask = torch.ones_like(ids)
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                                 do_sample=False, pad_token_id=eos)
        if out.shape[1] != prompt_len + new:
            raise RuntimeError(f"generate returned {out.shape[1] - prompt_len} new tokens, wanted {new}")

    def median_time(batch, prompt_len, new):
        generate(batch, prompt_len, new)  # warm-up
        return [timed(lambda: generate(batch, prompt_len, new), a.device) for _ in range(a.runs)]

    # Prefill first (batch 1), then decode per batch size.
    pre = median_time(1, a.prefill_tokens, 1)
    emit(dict(common, bench="hf_generate", what="prefill", batch=1, prompt=a.prefill_tokens,
              tok_s=a.prefill_tokens / statistics.median(pre), median_s=statistics.median(pre), runs_s=pre))
    rows = []
    for b in [int(x) for x in a.batches.split(",") if x]:
        first = statistics.median(median_time(b, a.prompt, 1))
        full = median_time(b, a.prompt, a.new)
        t = statistics.median(full)
        dec = b * (a.new - 1) / max(t - first, 1e-9)
        rec = dict(common, bench="hf_generate", what="decode", batch=b, prompt=a.prompt, new=a.new,
                   tok_s=b * a.new / t, decode_tok_s=dec, per_request_tok_s=dec / b, median_s=t,
                   first_token_s=first, runs_s=full, spread=(max(full) - min(full)) / t)
        emit(rec)
        rows.append(rec)
    note(f"{'batch':>6} {'decode tok/s':>14} {'per request':>12} {'tok/s incl. prefill':>20}")
    for r in rows:
        note(f"{r['batch']:>6} {r['decode_tok_s']:>14.1f} {r['per_request_tok_s']:>12.1f} {r['tok_s']:>20.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
