#!/usr/bin/python3
"""Writes the fallback demo model for `scripts/serve_demo.sh` when ../shared/models/brick-tiny is absent.

A small Llama checkpoint with *random* weights (its text is noise) and a byte-fallback tokenizer,
built with the same writer as the golden test checkpoints (tests/reference/make_golden.py), so it
exercises the whole serving path without any download.

Usage: make_demo_model.py --out DIR
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
import make_golden  # noqa: E402  (the checkpoint writer shared with the golden tests)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    cfg = dict(make_golden.BASE_CONFIG, architectures=["LlamaForCausalLM"], model_type="llama",
               hidden_size=128, intermediate_size=352, num_hidden_layers=4, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=1024)
    cfg["vocab_size"] = len(make_golden.tokenizer_json()["model"]["vocab"])
    tensors = make_golden.make_weights(cfg, torch.Generator().manual_seed(20261123), torch.float32)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    with open(os.path.join(a.out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": 1, "eos_token_id": 2}, f)
    with open(os.path.join(a.out, "tokenizer.json"), "w") as f:
        json.dump(make_golden.tokenizer_json(), f, ensure_ascii=False)
    with open(os.path.join(a.out, "tokenizer_config.json"), "w") as f:
        json.dump({"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
                   "unk_token": "<unk>", "tokenizer_class": "LlamaTokenizer"}, f)
    make_golden.write_safetensors(os.path.join(a.out, "model.safetensors"), tensors)
    print(f"make_demo_model.py: wrote {a.out} (random weights, {sum(t.numel() for t in tensors.values()) / 1e6:.1f}M parameters)")


if __name__ == "__main__":
    main()
