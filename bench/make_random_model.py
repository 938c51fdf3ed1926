#!/usr/bin/python3
"""Writes a Llama-architecture checkpoint with random weights, for the CPU benchmarks.

The output is a Hugging Face model directory that the engine loads like any other:
config.json, generation_config.json, model.safetensors (written here: 8-byte little-endian header
length, JSON header, raw tensor bytes), and tokenizer.json / tokenizer_config.json from brick-tiny
(8192 tokens), its vocabulary padded with tokens "▁tok<id>" up to vocab_size: like a real checkpoint,
every id the model can sample decodes to text, so streamed pieces (one per token that became text)
time each token. The weights are drawn from a
fixed seed, so every run writes the same bytes.

The default shape is a ~345M-parameter Llama (hidden 1024, 24 layers, 16 heads, 8 KV heads, head_dim
64, intermediate 2816, vocab 32000, untied embeddings). Weights ~ N(0, 0.02), norms = 1.

    /usr/bin/python3 bench/make_random_model.py --out /tmp/llama-345m-bf16 --dtype BF16

Only numpy and torch (Debian's python3-torch) are needed. The directory is a build artefact: write
it under the build directory or /tmp, never into the repository.
"""

import argparse
import json
import os
import shutil
import struct
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_TOKENIZER_DIR = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "models", "brick-tiny"))
# Bump when the bytes this script writes change, so run_cpu_bench.sh regenerates stale models.
GENERATOR_VERSION = 2  # 2: tokenizer vocabulary padded to vocab_size


def llama_config(a):
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": {"F32": "float32", "BF16": "bfloat16"}[a.dtype],
        "attention_bias": False,
        "head_dim": a.head_dim,
        "vocab_size": a.vocab,
        "hidden_size": a.hidden,
        "intermediate_size": a.intermediate,
        "num_hidden_layers": a.layers,
        "num_attention_heads": a.heads,
        "num_key_value_heads": a.kv_heads,
        "max_position_embeddings": a.max_pos,
        "rms_norm_eps": 1e-05,
        "rope_theta": 10000.0,
    }


def tensor_specs(c):
    """(name, shape, kind) in the order HF writes them (sorted by name); kind: 'norm' or 'matrix'."""
    H, I, V = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    QD = c["num_attention_heads"] * c["head_dim"]
    KD = c["num_key_value_heads"] * c["head_dim"]
    specs = [("model.embed_tokens.weight", (V, H), "matrix"), ("model.norm.weight", (H,), "norm"),
             ("lm_head.weight", (V, H), "matrix")]
    for l in range(c["num_hidden_layers"]):
        p = f"model.layers.{l}."
        specs += [
            (p + "input_layernorm.weight", (H,), "norm"),
            (p + "post_attention_layernorm.weight", (H,), "norm"),
            (p + "self_attn.q_proj.weight", (QD, H), "matrix"),
            (p + "self_attn.k_proj.weight", (KD, H), "matrix"),
            (p + "self_attn.v_proj.weight", (KD, H), "matrix"),
            (p + "self_attn.o_proj.weight", (H, QD), "matrix"),
            (p + "mlp.gate_proj.weight", (I, H), "matrix"),
            (p + "mlp.up_proj.weight", (I, H), "matrix"),
            (p + "mlp.down_proj.weight", (H, I), "matrix"),
        ]
    return sorted(specs)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="model directory to write (created)")
    ap.add_argument("--dtype", choices=["F32", "BF16"], default="BF16")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--intermediate", type=int, default=2816)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--max-pos", type=int, default=2048)
    ap.add_argument("--std", type=float, default=0.02, help="standard deviation of the matrix weights")
    ap.add_argument("--tokenizer-dir", default=DEFAULT_TOKENIZER_DIR,
                    help="directory with tokenizer.json and tokenizer_config.json to copy (default: brick-tiny)")
    ap.add_argument("--skip-if-current", action="store_true",
                    help="do nothing when --out already holds a model this script wrote with the same settings")
    a = ap.parse_args()

    cfg = llama_config(a)
    stamp_path = os.path.join(a.out, "bench_model.json")
    if a.skip_if_current and os.path.exists(stamp_path) and os.path.exists(os.path.join(a.out, "model.safetensors")):
        with open(stamp_path) as f:
            old = json.load(f)
        if (old.get("generator_version") == GENERATOR_VERSION and old.get("seed") == a.seed
                and old.get("std") == a.std and old.get("config") == cfg):
            print(f"make_random_model.py: {a.out} is current")
            return
    specs = tensor_specs(cfg)
    torch_dtype = {"F32": torch.float32, "BF16": torch.bfloat16}[a.dtype]
    elem = {"F32": 4, "BF16": 2}[a.dtype]

    # Header first (every size is known from the shapes), then the tensors streamed one by one, so
    # the whole model is never held in memory.
    header, offset = {}, 0
    for name, shape, _ in specs:
        nbytes = int(np.prod(shape)) * elem
        header[name] = {"dtype": a.dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header["__metadata__"] = {"format": "pt", "generator": f"brickserve bench/make_random_model.py v{GENERATOR_VERSION}",
                              "seed": str(a.seed)}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)  # 8-byte aligned data section, as the reference writer does

    os.makedirs(a.out, exist_ok=True)
    tmp = os.path.join(a.out, "model.safetensors.partial")
    gen = torch.Generator().manual_seed(a.seed)
    params = 0
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for name, shape, kind in specs:
            if kind == "norm":
                t = torch.ones(shape, dtype=torch.float32)
            else:
                t = torch.empty(shape, dtype=torch.float32).normal_(0.0, a.std, generator=gen)
            t = t.to(torch_dtype).contiguous()
            raw = t.view(torch.int16).numpy().tobytes() if torch_dtype == torch.bfloat16 else t.numpy().tobytes()
            assert len(raw) == header[name]["data_offsets"][1] - header[name]["data_offsets"][0]
            f.write(raw)
            params += t.numel()
    os.replace(tmp, os.path.join(a.out, "model.safetensors"))

    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    with open(os.path.join(a.out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": 1, "eos_token_id": 2}, f, indent=2)
    for fn in ("tokenizer.json", "tokenizer_config.json"):
        src = os.path.join(a.tokenizer_dir, fn)
        if not os.path.exists(src):
            sys.exit(f"make_random_model.py: {src} not found (pass --tokenizer-dir)")
    shutil.copyfile(os.path.join(a.tokenizer_dir, "tokenizer_config.json"), os.path.join(a.out, "tokenizer_config.json"))
    with open(os.path.join(a.tokenizer_dir, "tokenizer.json")) as f:
        tok = json.load(f)
    vocab = tok["model"]["vocab"]
    tok_vocab = len(vocab)
    if tok_vocab > a.vocab:
        sys.exit(f"make_random_model.py: the tokenizer has {tok_vocab} tokens, more than --vocab {a.vocab}")
    # Padding tokens no merge produces (encoding is unchanged) but that decode like words.
    for i in range(tok_vocab, a.vocab):
        vocab[f"\u2581tok{i}"] = i
    with open(os.path.join(a.out, "tokenizer.json"), "w") as f:
        json.dump(tok, f, ensure_ascii=False)
    # What run_cpu_bench.sh checks before reusing a directory.
    stamp = {"generator_version": GENERATOR_VERSION, "seed": a.seed, "dtype": a.dtype, "params": params,
             "weight_bytes": offset, "std": a.std, "config": cfg}
    with open(stamp_path, "w") as f:
        json.dump(stamp, f, indent=2)
    print(f"make_random_model.py: wrote {a.out}: {params / 1e6:.1f}M parameters, {a.dtype}, "
          f"{offset / 2**20:.1f} MiB of weights")


if __name__ == "__main__":
    main()
