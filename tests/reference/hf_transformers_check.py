#!/usr/bin/env python3
"""brickserve against Hugging Face transformers on the same checkpoint: greedy tokens and logits.

Writes a small random-weight Llama (hidden 512, 4 layers, 8 query / 4 KV heads (GQA), FFN 1408,
vocabulary of the given tokenizer) with `LlamaForCausalLM.save_pretrained` in F32 and in BF16, copies
the tokenizer in, and for a few prompts (token ids) compares `brickserve run --device cuda` with
references computed by transformers on the very weights of each file:

  F32 file   reference: transformers in F32 on CUDA (TF32 off); also reported: transformers F32 on
             the CPU and a float64 forward (tests/reference/make_golden.py)
  BF16 file  reference: transformers in F32 on CUDA on the BF16 weights upcast exactly (what the
             engine computes: F32 activations on BF16 weights); also reported: transformers in
             native BF16 on CUDA, and the float64 forward

Checks, per model, device and prompt (N new tokens, greedy, EOS ignored):
  logits   with `brickserve run --logits-out` (when the binary has it): every step's full logits row
           against the reference's logits on the same tokens (teacher-forced):
           max|engine - ref| <= tol * max|ref|, tol = 1e-3 (F32) or 5e-2 (BF16, F16).
           Without it, from `--top-logprobs 20`: each listed log-probability within 2 * tol * max|ref|
           of the reference's log_softmax (a logit error e moves a log-probability by at most 2e), and
           every token the reference ranks clearly above the engine's 20th must be listed.
  greedy   the engine's tokens equal the reference's own greedy tokens; they may part only at a step
           where the reference's top-2 gap is below tol * max|ref| (a near-tie may go either way; after
           the first difference the contexts differ and nothing more is compared).

--golden DIR also checks every case of tests/reference/make_golden.py (Llama, Mistral, Qwen2; F32, BF16,
F16; GQA, tied, sharded, head_dim 24, Llama 3 RoPE scaling) against its float64 reference. It needs no
transformers. Without transformers the synthetic model is checked against the float64 forward alone
(a dry run of the machinery; the real check needs transformers).

Exit status: 0 all passed, 1 a mismatch, 2 a setup error. A summary is printed at the end.

  python3 tests/reference/hf_transformers_check.py --brickserve BIN [--ld-library-path DIRS]
      [--tokenizer-dir DIR] [--work DIR] [--devices cuda[,cpu]] [--golden DIR] [--steps 32]
"""
import argparse
import copy
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import make_golden  # noqa: E402  (float64 reference forward, safetensors writer)

TOL = {"F32": 1e-3, "BF16": 5e-2, "F16": 5e-2}
TOP_LOGPROBS = 20
SYNTH = dict(hidden_size=512, intermediate_size=1408, num_hidden_layers=4, num_attention_heads=8,
             num_key_value_heads=4, max_position_embeddings=512, rms_norm_eps=1e-5, rope_theta=10000.0)
PROMPT_LENS = (7, 40, 121)  # BOS + random ids; 40 and 121 cross KV blocks of 16 and prefill chunks


def log(msg):
    print(msg, flush=True)


def setup_error(msg):
    print(f"hf_transformers_check: SETUP ERROR: {msg}", file=sys.stderr, flush=True)
    sys.exit(2)


# --- checkpoints -------------------------------------------------------------------------------------

SAFETENSORS_DTYPES = {"F32": (np.float32, torch.float32), "F16": (np.float16, torch.float16),
                      "BF16": (np.int16, torch.bfloat16)}


def read_safetensors(model_dir):
    """name -> torch tensor (storage dtype) for model.safetensors or a sharded index."""
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    out = {}
    for fn in files:
        with open(os.path.join(model_dir, fn), "rb") as f:
            data = f.read()
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8:8 + n])
        base = 8 + n
        for name, e in header.items():
            if name == "__metadata__":
                continue
            np_dt, t_dt = SAFETENSORS_DTYPES[e["dtype"]]
            a, b = e["data_offsets"]
            arr = np.frombuffer(data, dtype=np_dt, count=(b - a) // np.dtype(np_dt).itemsize, offset=base + a)
            t = torch.from_numpy(arr.copy()).reshape(e["shape"])
            out[name] = t.view(torch.bfloat16) if t_dt == torch.bfloat16 else t
    return out


def storage_dtype(weights):
    dt = weights["model.layers.0.mlp.down_proj.weight"].dtype
    return {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}[dt]


def load_tokenizer(tok_dir):
    path = os.path.join(tok_dir, "tokenizer.json")
    if not os.path.exists(path):
        setup_error(f"{path} not found (pass --tokenizer-dir: the bundle's tokenizer/ or brick-tiny)")
    with open(path) as f:
        tok = json.load(f)
    ids = list(tok["model"]["vocab"].values()) + [t["id"] for t in tok.get("added_tokens", [])]
    return tok, max(ids) + 1


def synth_config(vocab):
    cfg = dict(SYNTH, architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=vocab, hidden_act="silu",
               bos_token_id=1, eos_token_id=2, tie_word_embeddings=False, attention_bias=False, mlp_bias=False,
               torch_dtype="float32")
    cfg["head_dim"] = cfg["hidden_size"] // cfg["num_attention_heads"]
    return cfg


def synth_weights(cfg, seed):
    """F32 weights in HF names: make_golden's scales (logits of order 1), norms 1 + N(0, 0.1) so a
    kernel that ignored a norm weight would show."""
    return make_golden.make_weights(cfg, torch.Generator().manual_seed(seed), torch.float32)


def write_tokenizer(model_dir, tok, tok_dir, vocab):
    for fn in ("tokenizer_config.json",):
        src = os.path.join(tok_dir, fn)
        if os.path.exists(src):
            shutil.copyfile(src, os.path.join(model_dir, fn))
    with open(os.path.join(model_dir, "tokenizer.json"), "w") as f:
        json.dump(tok, f, ensure_ascii=False)


def write_model_hf(model_dir, hf_model, dtype):
    """save_pretrained of the model converted to `dtype` (safetensors)."""
    os.makedirs(model_dir, exist_ok=True)
    m = copy.deepcopy(hf_model).to({"F32": torch.float32, "BF16": torch.bfloat16}[dtype])
    try:
        m.save_pretrained(model_dir, safe_serialization=True)
    except TypeError:  # a transformers without the argument (safetensors is then the only format)
        m.save_pretrained(model_dir)
    files = [f for f in os.listdir(model_dir) if f.endswith(".safetensors")]
    if not files:
        setup_error(f"save_pretrained wrote no .safetensors file in {model_dir}: {os.listdir(model_dir)}")
    return m


def write_model_plain(model_dir, cfg, weights, dtype):
    """The same files without transformers (make_golden's writer)."""
    os.makedirs(model_dir, exist_ok=True)
    t_dt = {"F32": torch.float32, "BF16": torch.bfloat16}[dtype]
    c = dict(cfg, torch_dtype={"F32": "float32", "BF16": "bfloat16"}[dtype])
    with open(os.path.join(model_dir, "config.json"), "w") as f:
        json.dump(c, f, indent=1)
    with open(os.path.join(model_dir, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": 1, "eos_token_id": 2}, f)
    make_golden.write_safetensors(os.path.join(model_dir, "model.safetensors"),
                                  {k: v.to(t_dt) for k, v in weights.items()})


# --- references -------------------------------------------------------------------------------------

class Reference:
    """name + logits(ids) -> float64 CPU tensor [len(ids), vocab]."""

    def __init__(self, name, fn):
        self.name, self.fn = name, fn

    def logits(self, ids):
        return self.fn(ids)


def float64_reference(cfg, weights):
    w = {k: v.to(torch.float64) for k, v in weights.items()}
    c = dict(cfg)
    c.setdefault("rope_scaling", None)
    c.setdefault("tie_word_embeddings", False)
    return Reference("float64", lambda ids: make_golden.reference_logits(c, w, list(ids)))


def hf_reference(name, model, device):
    model = model.to(device).eval()

    def fn(ids):
        with torch.no_grad():
            out = model(input_ids=torch.tensor([list(ids)], device=device), use_cache=False)
        return out.logits[0].to(torch.float64).cpu()

    return Reference(name, fn)


def greedy(ref, prompt, steps):
    """The reference's own greedy tokens, and per step its top-2 gap and max|logit|."""
    ids, gaps, scales = list(prompt), [], []
    for _ in range(steps):
        row = ref.logits(ids)[-1]
        top2 = row.topk(2).values
        gaps.append(float(top2[0] - top2[1]))
        scales.append(float(row.abs().max()))
        ids.append(int(row.argmax()))
    return ids[len(prompt):], gaps, scales


# --- brickserve -------------------------------------------------------------------------------------

class Engine:
    def __init__(self, binary, ld_path):
        self.binary, self.env = binary, dict(os.environ)
        if ld_path:
            self.env["LD_LIBRARY_PATH"] = ld_path + (":" + os.environ["LD_LIBRARY_PATH"]
                                                     if os.environ.get("LD_LIBRARY_PATH") else "")
        try:
            h = subprocess.run([binary, "run", "--help"], env=self.env, capture_output=True, timeout=60)
        except OSError as e:
            setup_error(f"cannot run {binary}: {e}")
        help_text = (h.stdout + h.stderr).decode(errors="replace")
        if "--prompt-ids" not in help_text:
            setup_error(f"{binary} run --help does not list --prompt-ids:\n{help_text[-2000:]}")
        self.has_logits_out = "--logits-out" in help_text

    def run(self, model_dir, device, prompt, steps, tmp):
        cmd = [self.binary, "run", "--model", model_dir, "--device", device, "--prompt-ids",
               ",".join(map(str, prompt)), "--no-special-tokens", "--max-new-tokens", str(steps), "--ignore-eos",
               "--show-ids", "--top-logprobs", str(TOP_LOGPROBS), "--stats"]
        logits_path = None
        if self.has_logits_out:
            logits_path = os.path.join(tmp, "logits.f32")
            if os.path.exists(logits_path):
                os.remove(logits_path)
            cmd += ["--logits-out", logits_path]
        t0 = time.time()
        p = subprocess.run(cmd, env=self.env, capture_output=True, timeout=300)
        secs = time.time() - t0
        out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
        if p.returncode != 0:
            return {"error": f"exit {p.returncode}: {err.strip()[-1500:]}", "cmd": " ".join(cmd)}
        lines = out.split("\n")
        while lines and lines[-1] == "":
            lines.pop()
        # ... text ... / "ids: a,b,c" / one "id logprob | id:lp ..." line per generated token.
        if len(lines) < steps + 1 or not lines[-steps - 1].startswith("ids: "):
            return {"error": "unexpected output of brickserve run:\n" + "\n".join(lines[-steps - 3:]),
                    "cmd": " ".join(cmd)}
        ids = [int(x) for x in lines[-steps - 1][5:].split(",") if x.strip()]
        top = []
        for line in lines[-steps:]:
            head, _, alts = line.partition("|")
            tid, lp = head.split()
            alt = []
            for a in alts.split():
                i, v = a.split(":")
                alt.append((int(i), float(v)))
            top.append((int(tid), float(lp), alt))
        if len(ids) != steps or [t[0] for t in top] != ids:
            return {"error": f"generated {len(ids)} ids (wanted {steps}) or ids and log-probability lines disagree",
                    "cmd": " ".join(cmd)}
        dev_name = next((ln[len("device: "):] for ln in err.split("\n") if ln.startswith("device: ")), "?")
        logits = None
        if logits_path is not None:
            raw = np.fromfile(logits_path, dtype="<f4")
            if raw.size % steps != 0:
                return {"error": f"--logits-out wrote {raw.size} floats, not a multiple of {steps} steps",
                        "cmd": " ".join(cmd)}
            logits = torch.from_numpy(raw.reshape(steps, -1).astype(np.float64))
        return {"ids": ids, "top": top, "logits": logits, "device": dev_name, "seconds": secs, "cmd": " ".join(cmd)}


# --- comparison -------------------------------------------------------------------------------------

def compare(run, ref, prompt, ref_ids, gaps, scales, tol):
    """Returns (ok, worst relative error, description, problems)."""
    steps = len(run["ids"])
    seq = list(prompt) + run["ids"][:-1]
    rows = ref.logits(seq)[len(prompt) - 1:]  # rows[k]: the logits that chose engine token k
    problems, worst = [], 0.0
    for k in range(steps):
        row = rows[k]
        scale = float(row.abs().max())
        if run["logits"] is not None:
            got = run["logits"][k]
            if got.numel() != row.numel():
                problems.append(f"step {k}: {got.numel()} logits, reference has {row.numel()}")
                break
            err = float((got - row).abs().max()) / scale
            worst = max(worst, err)
            if err > tol and len(problems) < 5:
                problems.append(f"step {k}: logits max|diff| / max|ref| = {err:.3g} > {tol:g}")
        lp = torch.log_softmax(row, dim=-1)
        tid, tlp, alts = run["top"][k]
        listed = dict(alts)
        listed.setdefault(tid, tlp)
        bound = 2 * tol * scale
        for i, v in listed.items():
            d = abs(v - float(lp[i]))
            if run["logits"] is None:
                worst = max(worst, d / scale / 2)
            if d > bound and len(problems) < 5:
                problems.append(f"step {k}: log p(token {i}) = {v:.6g}, reference {float(lp[i]):.6g} "
                                f"(|diff| {d:.3g} > {bound:.3g})")
        if len(alts) >= TOP_LOGPROBS:
            floor = min(v for _, v in alts) + bound
            missing = [int(i) for i in torch.nonzero(lp > floor).flatten() if int(i) not in listed]
            if missing and len(problems) < 5:
                problems.append(f"step {k}: tokens {missing[:5]} rank clearly above the engine's top "
                                f"{TOP_LOGPROBS} in the reference but are not listed")
    # Greedy: equal, or parted at a near-tie of the reference (same context up to there).
    ties = [k for k, (g, s) in enumerate(zip(gaps, scales)) if g < tol * s]
    first_diff = next((k for k in range(steps) if run["ids"][k] != ref_ids[k]), None)
    if first_diff is not None and first_diff not in ties:
        problems.append(f"greedy token {first_diff} is {run['ids'][first_diff]}, reference {ref_ids[first_diff]}, "
                        f"whose top-2 gap {gaps[first_diff]:.3g} is no near-tie (>= {tol * scales[first_diff]:.3g})")
    same = steps if first_diff is None else first_diff
    g = f"greedy {same}/{steps} equal"
    if first_diff is not None:
        g += f" (parted at step {first_diff}: {'a near-tie, allowed' if first_diff in ties else 'NOT a near-tie'})"
    elif ties:
        g += f" ({len(ties)} near-tie steps passed)"
    kind = "logits" if run["logits"] is not None else "logprobs"
    return not problems, worst, f"{kind} rel err {worst:.3g} (tol {tol:g}), {g}", problems


class Report:
    def __init__(self):
        self.rows, self.failed, self.notes = [], 0, []

    def add(self, ok, what, detail, problems=()):
        self.rows.append(("PASS" if ok else "FAIL", what, detail, list(problems)[:3]))
        if not ok:
            self.failed += 1
        log(f"  {'PASS' if ok else 'FAIL'} {what}: {detail}")
        for p in problems:
            log(f"       {p}")

    def summary(self):
        log("")
        log("SUMMARY hf_transformers_check")
        for n in self.notes:
            log(f"  note: {n}")
        for status, what, detail, problems in self.rows:
            log(f"  {status} {what}: {detail}")
            for p in problems:
                log(f"       {p}")
        log(f"RESULT hf_check checks={len(self.rows)} failed={self.failed}")


def check_model(report, engine, devices, name, model_dir, dtype, gate, extras, prompts, steps, tmp):
    tol = TOL[dtype]
    log(f"[{name}] {model_dir}: {dtype}, reference {gate.name}; tolerance {tol:g} x max|logit|")
    for pi, prompt in enumerate(prompts):
        ref_ids, gaps, scales = greedy(gate, prompt, steps)
        # How far the other references are from the gate reference, on its greedy path.
        seq = list(prompt) + ref_ids[:-1]
        base = gate.logits(seq)[len(prompt) - 1:]
        for ex in extras:
            other = ex.logits(seq)[len(prompt) - 1:]
            rel = float(((other - base).abs().max(dim=-1).values / base.abs().max(dim=-1).values).max())
            log(f"  info {name} prompt {pi}: reference {ex.name} vs {gate.name}: max rel logit diff {rel:.3g}")
            if ex.name.startswith("hf-cpu") and rel > 1e-4:
                report.notes.append(f"{name}: {ex.name} differs from {gate.name} by {rel:.3g} (> 1e-4: TF32 on?)")
        for dev in devices:
            what = f"{name} --device {dev} prompt {pi} (len {len(prompt)})"
            run = engine.run(model_dir, dev, prompt, steps, tmp)
            if "error" in run:
                report.add(False, what, run["error"].split("\n")[0], run["error"].split("\n")[1:] + [run["cmd"]])
                continue
            ok, _, detail, problems = compare(run, gate, prompt, ref_ids, gaps, scales, tol)
            report.add(ok, what, f"{detail} [{run['device']}, {run['seconds']:.1f} s]", problems)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--brickserve", required=True, help="the brickserve binary")
    ap.add_argument("--ld-library-path", default="", help="LD_LIBRARY_PATH for brickserve only (the bundle's lib/)")
    ap.add_argument("--tokenizer-dir", default=os.path.join(ROOT, "..", "shared", "models", "brick-tiny"))
    ap.add_argument("--work", default=None, help="where the models are written (default: a temporary folder)")
    ap.add_argument("--devices", default=None, help="brickserve devices, comma-separated (default: cuda if "
                    "torch sees a GPU, else cpu)")
    ap.add_argument("--golden", default=None, help="also check make_golden.py's cases in this folder")
    ap.add_argument("--golden-only", action="store_true", help="only the --golden cases")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--seed", type=int, default=20261207)
    ap.add_argument("--dtypes", default="F32,BF16")
    a = ap.parse_args()

    torch.set_num_threads(min(8, os.cpu_count() or 1))
    has_cuda = torch.cuda.is_available()
    devices = a.devices.split(",") if a.devices else (["cuda"] if has_cuda else ["cpu"])
    if has_cuda:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    try:
        torch.set_float32_matmul_precision("highest")
    except AttributeError:
        pass
    work = a.work or tempfile.mkdtemp(prefix="hf_check_")
    os.makedirs(work, exist_ok=True)
    tmp = os.path.join(work, "tmp")
    os.makedirs(tmp, exist_ok=True)
    engine = Engine(a.brickserve, a.ld_library_path)
    report = Report()
    log(f"hf_transformers_check: torch {torch.__version__}, CUDA {'yes: ' + torch.cuda.get_device_name(0) if has_cuda else 'no'}; "
        f"brickserve devices {devices}; engine logits via "
        f"{'--logits-out (full rows)' if engine.has_logits_out else '--top-logprobs 20 (no --logits-out in this binary)'}")
    if not engine.has_logits_out:
        report.notes.append("brickserve run has no --logits-out: logits compared through the top-20 log-probabilities")

    # 1. make_golden's cases: float64 references, no transformers needed.
    if a.golden:
        manifest = os.path.join(a.golden, "manifest.json")
        if not os.path.exists(manifest):
            setup_error(f"{manifest} not found (tests/reference/make_golden.py --out {a.golden})")
        with open(manifest) as f:
            cases = json.load(f)["cases"]
        for case in cases:
            d = os.path.join(a.golden, case)
            with open(os.path.join(d, "config.json")) as f:
                cfg = json.load(f)
            with open(os.path.join(d, "reference.json")) as f:
                ref_json = json.load(f)
            weights = read_safetensors(d)
            gate = float64_reference(cfg, weights)
            check_model(report, engine, devices, f"golden/{case}", d, ref_json["dtype"], gate, [],
                        [ref_json["prompt_ids"]], min(a.steps, len(ref_json["greedy_ids"])), tmp)
    if a.golden_only:
        report.summary()
        return 1 if report.failed else 0

    # 2. The synthetic model through transformers.
    try:
        import transformers
        from transformers import LlamaConfig, LlamaForCausalLM
    except ImportError as e:
        transformers = None
        msg = (f"transformers is not installed ({e}): the synthetic model is checked against the float64 "
               "forward only; run this on the GPU machine (its python3 has transformers) for the real check")
        log(f"hf_transformers_check: NOTE: {msg}")
        report.notes.append(msg)
    tok, tok_vocab = load_tokenizer(a.tokenizer_dir)
    vocab = (tok_vocab + 63) // 64 * 64
    for i in range(tok_vocab, vocab):  # pad like bench/make_random_model.py: ids that decode to text
        tok["model"]["vocab"][f"\u2581tok{i}"] = i
    cfg = synth_config(vocab)
    weights = synth_weights(cfg, a.seed)
    gen = torch.Generator().manual_seed(a.seed + 1)
    prompts = [[1] + torch.randint(3, tok_vocab, (n - 1,), generator=gen).tolist() for n in PROMPT_LENS]

    hf32 = None
    if transformers is not None:
        log(f"hf_transformers_check: transformers {transformers.__version__}")
        # The config as a Hub checkpoint would have it, parsed by transformers itself.
        cfg_dir = os.path.join(work, "hf_config")
        os.makedirs(cfg_dir, exist_ok=True)
        with open(os.path.join(cfg_dir, "config.json"), "w") as f:
            json.dump(cfg, f, indent=1)
        hf_cfg = LlamaConfig.from_pretrained(cfg_dir)
        hf32 = LlamaForCausalLM(hf_cfg).to(torch.float32).eval()
        missing, unexpected = hf32.load_state_dict(weights, strict=False)
        missing = [k for k in missing if not k.endswith("inv_freq")]
        if missing or unexpected:
            setup_error(f"weights do not fit LlamaForCausalLM: missing {missing[:5]}, unexpected {unexpected[:5]}")

    for dtype in a.dtypes.split(","):
        model_dir = os.path.join(work, f"llama_synth_{dtype.lower()}")
        if os.path.isdir(model_dir):
            shutil.rmtree(model_dir)
        if hf32 is not None:
            saved = write_model_hf(model_dir, hf32, dtype)
        else:
            write_model_plain(model_dir, cfg, weights, dtype)
        write_tokenizer(model_dir, tok, a.tokenizer_dir, vocab)
        with open(os.path.join(model_dir, "config.json")) as f:
            written = json.load(f)
        if "rope_theta" not in written:
            report.notes.append(f"{model_dir}/config.json (as saved) has no top-level rope_theta (keys: "
                                f"{sorted(written)}); brickserve's config parser reads rope_theta only, "
                                f"default 10000 = this model's, so this check does not catch that")
        stored = read_safetensors(model_dir)  # the very weights brickserve reads
        if storage_dtype(stored) != dtype:
            setup_error(f"{model_dir}: weights stored as {storage_dtype(stored)}, expected {dtype}")
        f64 = float64_reference(cfg, stored)
        if hf32 is None:
            gate, extras = f64, []
        else:
            dev = "cuda" if has_cuda else "cpu"
            if dtype == "F32":
                gate = hf_reference(f"hf-{dev}-f32", copy.deepcopy(hf32), dev)
                extras = [f64] + ([hf_reference("hf-cpu-f32", copy.deepcopy(hf32), "cpu")] if has_cuda else [])
            else:
                upcast = copy.deepcopy(saved).to(torch.float32)  # BF16 weights, exactly, in F32
                gate = hf_reference(f"hf-{dev}-f32-on-bf16-weights", upcast, dev)
                extras = [f64] + ([hf_reference("hf-cuda-bf16-native", copy.deepcopy(saved), "cuda")] if has_cuda else [])
        check_model(report, engine, devices, f"synth_{dtype.lower()}", model_dir, dtype, gate, extras, prompts,
                    a.steps, tmp)
    report.summary()
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
