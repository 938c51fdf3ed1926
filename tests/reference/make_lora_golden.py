#!/usr/bin/python3
"""Writes small base checkpoints, LoRA adapters for them (Hugging Face PEFT layout) and reference logits.

The engine applies adapters unmerged (y = W x + s * B (A x)); the reference here is the plain float64
forward of make_golden.py over the MERGED weights W' = W + sum_i weight_i * s_i * B_i A_i, with
s = lora_alpha / r (lora_alpha / sqrt(r) with use_rslora). Adapter tensors stored as BF16/F16 are
upcast exactly to float64, so the reference sees the very values the engine loads.

Layout written under DIR:
  base/, base_qwen2/         model directories as make_golden.py writes them (F32, 2 KV heads)
  adapters/<name>/           adapter_config.json + adapter_model.safetensors (the bad ones vary)
  lora_reference.json        {"seed", "prompt_len", "cases": [...], "bad": [...]}
Each case has its own random prompt (BOS + PROMPT_LEN - 1 ids) and the logits of every position;
max_abs_logit_diff_vs_base shows how far the adapters move the logits from the base model's.
The "bad" adapters must be refused, with the given status code and a message containing "mentions".

Usage: make_lora_golden.py --out DIR [--seed N]   (a fresh seed each run unless given; it is recorded)
"""
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_golden  # noqa: E402

PROMPT_LEN = 24

ALL_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PARENT = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
          "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}

# base model name -> (architecture, model_type)
BASES = {"base": ("LlamaForCausalLM", "llama"), "base_qwen2": ("Qwen2ForCausalLM", "qwen2")}

# adapter name -> base, r, lora_alpha, use_rslora, target_modules, storage dtype, layers_to_transform
ADAPTERS = {
    "a_r8_qv": ("base", 8, 16, False, ["q_proj", "v_proj"], "F32", None),
    "b_r16_all": ("base", 16, 32, False, ALL_MODULES, "F32", None),
    "c_r4_rslora_mlp": ("base", 4, 8, True, ["gate_proj", "up_proj", "down_proj"], "BF16", None),
    "d_r64_attn_f16": ("base", 64, 32, False, ["q_proj", "k_proj", "v_proj", "o_proj"], "F16", None),
    "e_r256_down": ("base", 256, 256, False, ["down_proj"], "F32", [1]),
    "q2_r8_all": ("base_qwen2", 8, 16, False, ALL_MODULES, "F32", None),
}

# combination name -> [(adapter, weight)], all on "base"
COMBOS = {
    "combo_a_b": [("a_r8_qv", 0.5), ("b_r16_all", 1.0)],
    "combo_b_c_d": [("b_r16_all", 0.7), ("c_r4_rslora_mlp", 1.5), ("d_r64_attn_f16", -0.4)],
}

PRECISION = {"F32": 2, "F16": 1, "BF16": 0}  # for a combination's "dtype": its least precise adapter


def base_config(arch, model_type):
    return dict(make_golden.BASE_CONFIG, architectures=[arch], model_type=model_type, num_key_value_heads=2)


def write_model_dir(d, cfg, tensors):
    """One model directory, file for file as make_golden.build_case writes a single-shard case."""
    make_golden.write_model_files(d, cfg)
    make_golden.write_safetensors(os.path.join(d, "model.safetensors"), tensors)


def peft_config(base_path, r, alpha, rslora, targets, layers=None, **overrides):
    """adapter_config.json with the fields PEFT (0.1x) writes for a LoRA adapter."""
    c = {"alpha_pattern": {}, "auto_mapping": None, "base_model_name_or_path": base_path, "bias": "none",
         "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True, "layer_replication": None,
         "layers_pattern": None, "layers_to_transform": layers, "loftq_config": {}, "lora_alpha": alpha,
         "lora_dropout": 0.0, "megatron_config": None, "megatron_core": "megatron.core", "modules_to_save": None,
         "peft_type": "LORA", "r": r, "rank_pattern": {}, "revision": None, "target_modules": list(targets),
         "task_type": "CAUSAL_LM", "use_dora": False, "use_rslora": rslora}
    c.update(overrides)
    return c


def lora_name(l, module, ab):
    return f"base_model.model.model.layers.{l}.{PARENT[module]}.{module}.lora_{ab}.weight"


def lora_scale(r, alpha, rslora):
    return alpha / math.sqrt(r) if rslora else alpha / r


def make_lora(cfg, w, gen, r, alpha, rslora, targets, dtype, layers):
    """Random A [r, in], B [out, r] per targeted module; B is scaled so that ||s B A||_F is 0.3-0.5 of ||W||_F."""
    storage, s = make_golden.TORCH_DTYPES[dtype], lora_scale(r, alpha, rslora)
    t = {}
    for l in (layers if layers is not None else range(cfg["num_hidden_layers"])):
        for m in targets:
            W = w[f"model.layers.{l}.{PARENT[m]}.{m}.weight"]
            out_f, in_f = W.shape
            A = (torch.randn(r, in_f, generator=gen, dtype=torch.float64) * in_f ** -0.5).to(storage)
            B = torch.randn(out_f, r, generator=gen, dtype=torch.float64)
            rho = 0.3 + 0.2 * float(torch.rand((), generator=gen, dtype=torch.float64))
            B *= rho * W.norm() / (s * (B @ A.double()).norm())
            t[lora_name(l, m, "A")] = A
            t[lora_name(l, m, "B")] = B.to(storage)
    return t


def merged_weights(w, adapters):
    """adapters: [(tensors, scale, weight)]; returns W + sum weight * scale * B A in float64."""
    w = dict(w)
    for tensors, s, weight in adapters:
        for name in tensors:
            if ".lora_A." not in name:
                continue
            A, B = tensors[name].double(), tensors[name.replace(".lora_A.", ".lora_B.")].double()
            key = name[len("base_model.model."):].replace(".lora_A.weight", ".weight")
            w[key] = w[key] + (weight * s) * (B @ A)
    return w


def write_adapter(d, config, tensors=None):
    os.makedirs(d, exist_ok=True)
    for fn in os.listdir(d):
        os.remove(os.path.join(d, fn))
    with open(os.path.join(d, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    if tensors is not None:
        make_golden.write_safetensors(os.path.join(d, "adapter_model.safetensors"), tensors)


def main():
    args, seed, gen = make_golden.parse_reference_args(__doc__)
    out = os.path.abspath(args.out)

    bases = {}  # name -> (cfg, float64 weights, path)
    for name, (arch, model_type) in BASES.items():
        cfg = base_config(arch, model_type)
        tensors = make_golden.make_weights(cfg, gen, torch.float32)
        path = os.path.join(out, name)
        write_model_dir(path, cfg, tensors)
        bases[name] = (cfg, {k: v.to(torch.float64) for k, v in tensors.items()}, path)

    adapters = {}  # name -> (base, tensors, scale, dtype)
    for name, (base, r, alpha, rslora, targets, dtype, layers) in ADAPTERS.items():
        cfg, w, path = bases[base]
        tensors = make_lora(cfg, w, gen, r, alpha, rslora, targets, dtype, layers)
        write_adapter(os.path.join(out, "adapters", name), peft_config(path, r, alpha, rslora, targets, layers), tensors)
        adapters[name] = (base, tensors, lora_scale(r, alpha, rslora), dtype)

    cases = []
    plans = [(n, [(n, 1.0)]) for n in ADAPTERS] + list(COMBOS.items())
    for name, mix in plans:
        base = adapters[mix[0][0]][0]
        cfg, w, _ = bases[base]
        merged = merged_weights(w, [(adapters[a][1], adapters[a][2], wt) for a, wt in mix])
        prompt = [1] + torch.randint(3, cfg["vocab_size"], (PROMPT_LEN - 1,), generator=gen).tolist()
        logits = make_golden.reference_logits(cfg, merged, prompt)
        diff = float((logits - make_golden.reference_logits(cfg, w, prompt)).abs().max())
        scale = float(logits.abs().max())
        if not diff > 0.05 * scale:
            sys.exit(f"{name}: the adapters barely move the logits ({diff:.4g} vs scale {scale:.4g}); rerun")
        dtypes = [adapters[a][3] for a, _ in mix]
        cases.append({"name": name, "base": base,
                      "adapters": [{"name": a, "weight": wt, "dtype": adapters[a][3]} for a, wt in mix],
                      "dtype": min(dtypes, key=PRECISION.get), "prompt_ids": prompt,
                      "prompt_logits": logits.tolist(), "max_abs_logit_diff_vs_base": diff})

    # Adapters the engine must refuse. Most start from a_r8_qv's tensors and config.
    cfg, w, base_path = bases["base"]
    a_tensors = adapters["a_r8_qv"][1]
    a_config = peft_config(base_path, 8, 16, False, ["q_proj", "v_proj"])
    ad = os.path.join(out, "adapters")
    bad = []

    write_adapter(os.path.join(ad, "bad_bin_only"), a_config)
    torch.save(a_tensors, os.path.join(ad, "bad_bin_only", "adapter_model.bin"))
    bad.append(("bad_bin_only", "INVALID_ARGUMENT", "adapter_model.bin"))

    t = dict(a_tensors)
    t[lora_name(0, "q_proj", "A")] = torch.randn(8, 32, generator=gen) * 32 ** -0.5
    write_adapter(os.path.join(ad, "bad_shape"), a_config, t)
    bad.append(("bad_shape", "FAILED_PRECONDITION", lora_name(0, "q_proj", "A")))

    L = cfg["num_hidden_layers"]
    t = dict(a_tensors)
    t[lora_name(L, "q_proj", "A")] = a_tensors[lora_name(0, "q_proj", "A")].clone()
    t[lora_name(L, "q_proj", "B")] = a_tensors[lora_name(0, "q_proj", "B")].clone()
    write_adapter(os.path.join(ad, "bad_layer"), a_config, t)
    bad.append(("bad_layer", "FAILED_PRECONDITION", f"layers.{L}"))

    path = os.path.join(ad, "bad_truncated", "adapter_model.safetensors")
    write_adapter(os.path.dirname(path), a_config, a_tensors)
    with open(path, "rb") as f:
        raw = f.read()
    with open(path, "wb") as f:
        f.write(raw[: len(raw) // 2])
    bad.append(("bad_truncated", "INVALID_ARGUMENT", "adapter_model.safetensors"))

    write_adapter(os.path.join(ad, "bad_dora"), dict(a_config, use_dora=True), a_tensors)
    bad.append(("bad_dora", "INVALID_ARGUMENT", "use_dora"))

    t = dict(a_tensors)
    t["base_model.model.lm_head.lora_A.weight"] = torch.randn(8, cfg["hidden_size"], generator=gen) * 0.1
    t["base_model.model.lm_head.lora_B.weight"] = torch.randn(cfg["vocab_size"], 8, generator=gen) * 0.1
    write_adapter(os.path.join(ad, "bad_target_lm_head"),
                  peft_config(base_path, 8, 16, False, ["q_proj", "v_proj", "lm_head"]), t)
    bad.append(("bad_target_lm_head", "INVALID_ARGUMENT", "lm_head"))

    t = make_lora(cfg, w, gen, 4, 16, False, ["q_proj", "v_proj"], "F32", None)
    write_adapter(os.path.join(ad, "bad_rank_mismatch"), a_config, t)  # the config says r = 8
    bad.append(("bad_rank_mismatch", "FAILED_PRECONDITION", "lora_A"))

    ref = {"seed": seed, "prompt_len": PROMPT_LEN, "cases": cases,
           "bad": [{"name": n, "base": "base", "expect": e, "mentions": m} for n, e, m in bad]}
    with open(os.path.join(out, "lora_reference.json"), "w") as f:
        json.dump(ref, f)
    print(f"make_lora_golden: {len(cases)} cases, {len(bad)} bad adapters in {args.out} "
          f"(seed {seed}; rerun with --seed {seed} to reproduce)")


if __name__ == "__main__":
    main()
