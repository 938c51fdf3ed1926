#!/usr/bin/python3
"""Writes random PEFT LoRA adapters for a model directory, for the LoRA benchmarks.

Each adapter is a Hugging Face PEFT directory (adapter_config.json + adapter_model.safetensors)
with the model's shapes: rank --rank on every projection (q, k, v, o, gate, up, down) of every
layer, lora_alpha = 2 * rank, BF16 or F32, values ~ N(0, --std) (default 0.01, small: the
benchmark measures speed, not quality). Adapter i is written to OUT/adapter-<i> from seed --seed + i.

    /usr/bin/python3 bench/make_random_adapters.py --model /tmp/llama-345m-bf16 --out /tmp/adapters --count 32

Write under /tmp or the build directory, never into the repository.
"""
import argparse
import json
import os
import sys

import torch

# The safetensors writer of the test references (one writer for every script that makes checkpoints).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
from make_golden import write_safetensors  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--count", type=int, default=32)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--dtype", choices=["F32", "BF16"], default="BF16")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--std", type=float, default=0.01, help="standard deviation of A and B")
    a = ap.parse_args()
    with open(os.path.join(a.model, "config.json")) as f:
        c = json.load(f)
    H, I, L = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    hd = c.get("head_dim", H // c["num_attention_heads"])
    QD, KD = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    shapes = {"self_attn.q_proj": (QD, H), "self_attn.k_proj": (KD, H), "self_attn.v_proj": (KD, H),
              "self_attn.o_proj": (H, QD), "mlp.gate_proj": (I, H), "mlp.up_proj": (I, H), "mlp.down_proj": (H, I)}
    dtype = {"F32": torch.float32, "BF16": torch.bfloat16}[a.dtype]
    for i in range(a.count):
        d = os.path.join(a.out, f"adapter-{i}")
        os.makedirs(d, exist_ok=True)
        gen = torch.Generator().manual_seed(a.seed + i)
        tensors = {}
        for l in range(L):
            for mod, (out_f, in_f) in shapes.items():
                p = f"base_model.model.model.layers.{l}.{mod}"
                tensors[p + ".lora_A.weight"] = (torch.randn(a.rank, in_f, generator=gen) * a.std).to(dtype)
                tensors[p + ".lora_B.weight"] = (torch.randn(out_f, a.rank, generator=gen) * a.std).to(dtype)
        write_safetensors(os.path.join(d, "adapter_model.safetensors"), tensors)
        with open(os.path.join(d, "adapter_config.json"), "w") as f:
            json.dump({"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": a.rank, "lora_alpha": 2 * a.rank,
                       "use_rslora": False, "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": False,
                       "target_modules": [m.split(".")[1] for m in shapes], "base_model_name_or_path": a.model,
                       "inference_mode": True, "modules_to_save": None}, f, indent=1)
    print(f"make_random_adapters: {a.count} adapters (rank {a.rank}, {a.dtype}) in {a.out}")


if __name__ == "__main__":
    main()
