#!/usr/bin/python3
"""Writes small Llama-family checkpoints with random weights and reference outputs for them.

For each case: a Hugging Face model directory (config.json, safetensors, a small byte-fallback
tokenizer.json) and reference.json with a random prompt, its greedy continuation and the logits of
every step, computed by the plain float64 PyTorch implementation below (independent of the engine:
no KV cache, full causal attention recomputed each step). Weights stored as BF16/F16 are upcast
exactly to float64, so the reference sees the very weights the engine sees.

Usage: make_golden.py --out DIR [--seed N]   (a fresh seed each run unless given; it is recorded)
"""
import argparse
import json
import math
import os
import struct
import sys

import torch

STEPS = 32
PROMPT_LEN = 40  # long enough that prefill takes the SGEMM attention path (>= 16 rows)

# name -> (architecture, overrides, storage dtype, shards)
CASES = {
    "llama_mha_f32": ("LlamaForCausalLM", dict(num_key_value_heads=4), "F32", 1),
    "llama_gqa_tied_f32": ("LlamaForCausalLM", dict(num_key_value_heads=2, tie_word_embeddings=True), "F32", 1),
    "llama3_rope_scaling_f32": ("LlamaForCausalLM", dict(
        num_key_value_heads=2, rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 32}), "F32", 1),
    "llama_head_dim_sharded_f32": ("LlamaForCausalLM", dict(num_key_value_heads=2, head_dim=24), "F32", 2),
    "mistral_f32": ("MistralForCausalLM", dict(num_key_value_heads=1, sliding_window=4096), "F32", 1),
    "qwen2_bias_tied_f32": ("Qwen2ForCausalLM", dict(num_key_value_heads=2, tie_word_embeddings=True,
                                                     rope_theta=1000000.0), "F32", 1),
    "llama_gqa_bf16": ("LlamaForCausalLM", dict(num_key_value_heads=2), "BF16", 1),
    "qwen2_bias_bf16": ("Qwen2ForCausalLM", dict(num_key_value_heads=2), "BF16", 1),
    "llama_gqa_f16": ("LlamaForCausalLM", dict(num_key_value_heads=2), "F16", 1),
}

BASE_CONFIG = dict(hidden_size=64, intermediate_size=160, num_hidden_layers=3, num_attention_heads=4,
                   vocab_size=384, max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=10000.0,
                   hidden_act="silu", bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
                   torch_dtype="float32")

TORCH_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


def write_safetensors(path, tensors):
    """tensors: dict name -> torch tensor (already in its storage dtype)."""
    header, blobs, offset = {}, [], 0
    names = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        raw = t.view(torch.int16).numpy().tobytes() if t.dtype == torch.bfloat16 else t.numpy().tobytes()
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)  # keep the data section 8-byte aligned, as the reference writer does
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def tokenizer_json():
    """A small SentencePiece-style BPE with byte fallback (the Llama 2 layout)."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    chars = ["\u2581"] + [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789.,")
    for ch in chars:
        vocab.setdefault(ch, len(vocab))
    merges = []
    for pair in ["\u2581 t", "t h", "\u2581t h", "e r", "i n", "\u2581 a", "o n", "a n", "\u2581 s", "r e"]:
        a, b = pair.split(" ")
        merges.append(pair)
        vocab.setdefault(a + b, len(vocab))
    special = [{"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
                "normalized": False, "special": True} for i, c in enumerate(["<unk>", "<s>", "</s>"])]
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": special,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
        "pre_tokenizer": None,
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                                    {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }


def inv_freq(cfg, head_dim):
    """RoPE inverse frequencies with Llama 3 scaling, in float64, rounded to float32 like the engine."""
    theta = cfg["rope_theta"]
    f = [1.0 / theta ** (2.0 * i / head_dim) for i in range(head_dim // 2)]
    rs = cfg.get("rope_scaling")
    if rs and rs["rope_type"] == "llama3":
        old = rs["original_max_position_embeddings"]
        lo, hi, factor = rs["low_freq_factor"], rs["high_freq_factor"], rs["factor"]
        out = []
        for x in f:
            wavelen = 2 * math.pi / x
            if wavelen > old / lo:
                out.append(x / factor)
            elif wavelen < old / hi:
                out.append(x)
            else:
                smooth = (old / wavelen - lo) / (hi - lo)
                out.append((1 - smooth) * x / factor + smooth * x)
        f = out
    return torch.tensor(f, dtype=torch.float32).to(torch.float64)


def reference_logits(cfg, w, ids, ffn=None):
    """Plain float64 Llama forward over the whole sequence; returns logits [T, vocab].

    ffn(layer, x [T, H]) -> [T, H] replaces the dense SwiGLU FFN (make_modules_golden.py's masks)."""
    H, nh, nkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim", H // nh)
    eps = cfg["rms_norm_eps"]
    T = len(ids)
    freqs = inv_freq(cfg, hd)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * freqs[None, :]
    cos, sin = ang.cos(), ang.sin()

    def rms(x, g):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * g

    def rope(x):  # [T, heads, hd]
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        c, s = cos[:, None, :], sin[:, None, :]
        return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)

    def lin(x, name):
        y = x @ w[name + ".weight"].T
        return y + w[name + ".bias"] if name + ".bias" in w else y

    x = w["model.embed_tokens.weight"][torch.tensor(ids)]
    mask = torch.full((T, T), float("-inf"), dtype=torch.float64).triu(1)
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        h = rms(x, w[p + "input_layernorm.weight"])
        q = rope(lin(h, p + "self_attn.q_proj").view(T, nh, hd))
        k = rope(lin(h, p + "self_attn.k_proj").view(T, nkv, hd))
        v = lin(h, p + "self_attn.v_proj").view(T, nkv, hd)
        k = k.repeat_interleave(nh // nkv, dim=1)
        v = v.repeat_interleave(nh // nkv, dim=1)
        att = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(hd) + mask
        o = torch.einsum("hqk,khd->qhd", att.softmax(-1), v).reshape(T, nh * hd)
        x = x + lin(o, p + "self_attn.o_proj")
        h = rms(x, w[p + "post_attention_layernorm.weight"])
        if ffn is not None:
            x = x + ffn(l, h)
        else:
            x = x + lin(torch.nn.functional.silu(lin(h, p + "mlp.gate_proj")) * lin(h, p + "mlp.up_proj"),
                        p + "mlp.down_proj")
    head = w["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else w["lm_head.weight"]
    return rms(x, w["model.norm.weight"]) @ head.T


def make_weights(cfg, gen, storage):
    H, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim", H // nh)
    qkv_bias = cfg["architectures"][0] == "Qwen2ForCausalLM"

    def rnd(*shape, std):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * std).to(storage)

    t = {"model.embed_tokens.weight": rnd(V, H, std=1.0), "model.norm.weight": (1 + rnd(H, std=0.1).double()).to(storage)}
    if not cfg["tie_word_embeddings"]:
        t["lm_head.weight"] = rnd(V, H, std=H ** -0.5)
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        t[p + "input_layernorm.weight"] = (1 + rnd(H, std=0.1).double()).to(storage)
        t[p + "post_attention_layernorm.weight"] = (1 + rnd(H, std=0.1).double()).to(storage)
        t[p + "self_attn.q_proj.weight"] = rnd(nh * hd, H, std=H ** -0.5)
        t[p + "self_attn.k_proj.weight"] = rnd(nkv * hd, H, std=H ** -0.5)
        t[p + "self_attn.v_proj.weight"] = rnd(nkv * hd, H, std=H ** -0.5)
        t[p + "self_attn.o_proj.weight"] = rnd(H, nh * hd, std=(nh * hd) ** -0.5)
        if qkv_bias:
            t[p + "self_attn.q_proj.bias"] = rnd(nh * hd, std=0.5)
            t[p + "self_attn.k_proj.bias"] = rnd(nkv * hd, std=0.5)
            t[p + "self_attn.v_proj.bias"] = rnd(nkv * hd, std=0.5)
        t[p + "mlp.gate_proj.weight"] = rnd(I, H, std=H ** -0.5)
        t[p + "mlp.up_proj.weight"] = rnd(I, H, std=H ** -0.5)
        t[p + "mlp.down_proj.weight"] = rnd(H, I, std=I ** -0.5)
    return t


def greedy_with_margin(cfg, w, prompt):
    """Greedy decode; returns ids, per-step last-position logits, and the smallest top-2 gap."""
    ids, steps, margin = list(prompt), [], float("inf")
    for _ in range(STEPS):
        logits = reference_logits(cfg, w, ids)[-1]
        top2 = logits.topk(2).values
        margin = min(margin, float(top2[0] - top2[1]))
        steps.append(logits)
        ids.append(int(logits.argmax()))
    return ids[len(prompt):], steps, margin


def write_model_files(d, cfg):
    """A model directory's config, generation config and tokenizer files; the checkpoint files of an
    earlier run are removed (the caller writes the new ones)."""
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    with open(os.path.join(d, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": 1, "eos_token_id": 2}, f)
    with open(os.path.join(d, "tokenizer.json"), "w") as f:
        json.dump(tokenizer_json(), f, ensure_ascii=False)
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
                   "unk_token": "<unk>", "tokenizer_class": "LlamaTokenizer"}, f)
    for fn in os.listdir(d):
        if fn.endswith(".safetensors") or fn.endswith(".safetensors.index.json"):
            os.remove(os.path.join(d, fn))


def build_case(out_dir, name, arch, overrides, dtype, shards, gen):
    cfg = dict(BASE_CONFIG, architectures=[arch], model_type={"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral",
                                                             "Qwen2ForCausalLM": "qwen2"}[arch])
    cfg.update(overrides)
    storage = TORCH_DTYPES[dtype]
    tensors = make_weights(cfg, gen, storage)
    w = {k: v.to(torch.float64) for k, v in tensors.items()}
    # Draw prompts until the greedy path has no near-tie: a tie within float32 rounding could
    # legitimately go either way, and the test demands exact tokens.
    for _ in range(50):
        prompt = [1] + torch.randint(3, cfg["vocab_size"], (PROMPT_LEN - 1,), generator=gen).tolist()
        greedy, steps, margin = greedy_with_margin(cfg, w, prompt)
        if margin > 1e-3:
            break
    else:
        sys.exit(f"{name}: no prompt without a near-tie found")
    d = os.path.join(out_dir, name)
    write_model_files(d, cfg)
    names = sorted(tensors)
    if shards == 1:
        write_safetensors(os.path.join(d, "model.safetensors"), tensors)
    else:
        weight_map = {}
        for s in range(shards):
            fn = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
            part = {n: tensors[n] for n in names[s::shards]}
            write_safetensors(os.path.join(d, fn), part)
            weight_map.update({n: fn for n in part})
        with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=1)
    prefill = reference_logits(cfg, w, prompt)  # every prompt position, for scoring
    ref = {"name": name, "dtype": dtype, "prompt_ids": prompt, "greedy_ids": greedy, "min_top2_margin": margin,
           "step_logits": [s.tolist() for s in steps], "prompt_logits": prefill.tolist()}
    with open(os.path.join(d, "reference.json"), "w") as f:
        json.dump(ref, f)
    return name


def parse_reference_args(doc):
    """The reference scripts' command line (--out DIR [--seed N]): returns (args, seed, generator),
    a fresh seed unless given, torch on 2 threads, --out created."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    torch.set_num_threads(2)
    os.makedirs(args.out, exist_ok=True)
    return args, seed, torch.Generator().manual_seed(seed)


def main():
    args, seed, gen = parse_reference_args(__doc__)
    built = [build_case(args.out, n, *spec, gen) for n, spec in CASES.items()]
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump({"seed": seed, "cases": built, "steps": STEPS}, f, indent=1)
    print(f"make_golden: {len(built)} cases in {args.out} (seed {seed}; rerun with --seed {seed} to reproduce)")


if __name__ == "__main__":
    main()
