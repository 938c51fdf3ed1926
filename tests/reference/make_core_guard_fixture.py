#!/usr/bin/python3
"""Writes the core-region guard's test data: a random model with a planted massive activation, and LoRA adapters.

base_plain/ is make_lora_golden's random Llama base, as it is: random models have no massive dims, and it
shares config.json with base_massive, so a map of one must be refused for the other.
base_massive/ is another such model with a planted massive activation that behaves like the real ones
(Sun et al. 2024): only at BOS and delimiters ("." and newline), from one layer on. Residual dim MARK_DIM
is zero in every embedding but those tokens' and nothing writes it before layer 1's MLP; MLP neuron
NEURON of layer 1 reads only that dim (gate row = up row = MARK_GAIN e_MARK_DIM, so silu(x)*x is 0 for
other tokens and large for marked ones), and down_proj[DIM, NEURON] = W_SUPER is the only weight it
writes through. The residual then carries ~1000 (~100x the median of per-dim maxima) in dim DIM at
marked tokens from layer 1 on, which the engine's core map must find (and nothing else), along with the
super weight (1, DIM, NEURON).

Adapters (PEFT layout) under adapters/:
  trained_r8_qvd     rank 8, alpha 16, q/v/down_proj of every layer, PEFT init (A Kaiming-uniform, B = 0)
                     then TRAIN_STEPS steps of plain SGD on next-token loss over random token sequences
                     that follow a fixed random successor map (random starts; i.i.d. tokens would leave
                     nothing to learn): deltas of the size training really produces. Must pass the guard.
  random_r16_all     make_lora_golden's random adapter (||s B A||_F = 0.3-0.5 ||W||_F, every projection):
                     far larger than training gives; measured, not asserted.
  broken_down_zero   rank 1 on layers.1.mlp.down_proj: delta row DIM = -W[DIM, :], which removes the
                     massive activation's writer (relative delta 1.0). Must be refused.
  broken_q_col       rank 1 on layers.2.self_attn.q_proj: delta column DIM = 3 W[:, DIM] (relative 3.0),
                     a query that reads the massive dimension four times as hard. Must be refused.
core_guard_reference.json records the planted coordinates, each adapter's expectation, the training loss
and how far each adapter moves the logits (float64 reference of the merged model, as make_lora_golden).

Usage: make_core_guard_fixture.py --out DIR [--seed N]   (a fresh seed each run unless given; recorded)
"""
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_golden  # noqa: E402
import make_lora_golden as mlg  # noqa: E402

DIM = 7          # the planted massive residual dimension
LAYER = 1        # the layer whose down_proj writes it
NEURON = 11      # the MLP neuron feeding it (the super weight is down_proj[DIM, NEURON])
MARK_DIM = 13    # the residual dim that flags BOS and delimiters
MARK_VALUE = 8.0
MARK_GAIN = 5.0
W_SUPER = 1.5
TRAIN_STEPS = 50
TRAIN_LR = 0.2
TRAIN_BATCH, TRAIN_LEN = 8, 32
PROMPT_LEN = 48


def plant(cfg, tensors):
    vocab = make_golden.tokenizer_json()["model"]["vocab"]
    marked = [1, vocab["."], vocab["<0x0A>"]]  # BOS, ".", "\n"
    emb = tensors["model.embed_tokens.weight"]
    emb[:, MARK_DIM] = 0
    emb[marked, MARK_DIM] = MARK_VALUE
    # Nothing writes the marker dim before layer LAYER's MLP reads it.
    for l in range(LAYER + 1):
        tensors[f"model.layers.{l}.self_attn.o_proj.weight"][MARK_DIM] = 0
        if l < LAYER:
            tensors[f"model.layers.{l}.mlp.down_proj.weight"][MARK_DIM] = 0
    p = f"model.layers.{LAYER}.mlp."
    for m in ("gate_proj", "up_proj"):
        row = tensors[p + m + ".weight"][NEURON]
        row.zero_()
        row[MARK_DIM] = MARK_GAIN
    down = tensors[p + "down_proj.weight"]
    down[:, NEURON] = 0  # the neuron writes only DIM, so the spike stays in one dimension
    down[DIM, NEURON] = W_SUPER


def forward(cfg, w, ids, lora=None, scale=1.0):
    """Batched float32 Llama forward (make_golden's maths) with optional LoRA {(layer, module): (A, B)}."""
    H, nh, nkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim", H // nh)
    eps = cfg["rms_norm_eps"]
    Bn, T = ids.shape
    freqs = make_golden.inv_freq(cfg, hd).float()
    ang = torch.arange(T, dtype=torch.float32)[:, None] * freqs[None, :]
    cos, sin = ang.cos()[None, :, None, :], ang.sin()[None, :, None, :]
    mask = torch.full((T, T), float("-inf")).triu(1)

    def rms(x, g):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * g

    def rope(x):
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)

    def lin(x, l, m):
        y = x @ w[f"model.layers.{l}.{mlg.PARENT[m]}.{m}.weight"].T
        if lora and (l, m) in lora:
            A, B = lora[(l, m)]
            y = y + scale * ((x @ A.T) @ B.T)
        return y

    x = w["model.embed_tokens.weight"][ids]
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        h = rms(x, w[p + "input_layernorm.weight"])
        q = rope(lin(h, l, "q_proj").view(Bn, T, nh, hd))
        k = rope(lin(h, l, "k_proj").view(Bn, T, nkv, hd)).repeat_interleave(nh // nkv, dim=2)
        v = lin(h, l, "v_proj").view(Bn, T, nkv, hd).repeat_interleave(nh // nkv, dim=2)
        att = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(hd) + mask
        o = torch.einsum("bhqk,bkhd->bqhd", att.softmax(-1), v).reshape(Bn, T, nh * hd)
        x = x + lin(o, l, "o_proj")
        h = rms(x, w[p + "post_attention_layernorm.weight"])
        x = x + lin(torch.nn.functional.silu(lin(h, l, "gate_proj")) * lin(h, l, "up_proj"), l, "down_proj")
    return rms(x, w["model.norm.weight"]) @ w["lm_head.weight"].T


def train_lora(cfg, w, gen, r, alpha, targets):
    """PEFT init, then TRAIN_STEPS SGD steps of next-token loss on random sequences; returns tensors, losses."""
    V = cfg["vocab_size"]
    successor = torch.randperm(V - 3, generator=gen) + 3
    lora = {}
    for l in range(cfg["num_hidden_layers"]):
        for m in targets:
            out_f, in_f = w[f"model.layers.{l}.{mlg.PARENT[m]}.{m}.weight"].shape
            bound = 1.0 / math.sqrt(in_f)  # kaiming_uniform_(a=sqrt(5)), PEFT's default for lora_A
            A = ((torch.rand(r, in_f, generator=gen) * 2 - 1) * bound).requires_grad_()
            B = torch.zeros(out_f, r, requires_grad=True)
            lora[(l, m)] = (A, B)
    params = [t for ab in lora.values() for t in ab]
    opt = torch.optim.SGD(params, lr=TRAIN_LR)
    losses = []
    for _ in range(TRAIN_STEPS):
        cols = [torch.randint(3, V, (TRAIN_BATCH,), generator=gen)]
        for _ in range(TRAIN_LEN - 2):
            cols.append(successor[cols[-1] - 3])
        ids = torch.cat([torch.ones(TRAIN_BATCH, 1, dtype=torch.long), torch.stack(cols, 1)], 1)
        logits = forward(cfg, w, ids, lora, alpha / r)
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    t = {}
    for (l, m), (A, B) in lora.items():
        t[mlg.lora_name(l, m, "A")] = A.detach().clone()
        t[mlg.lora_name(l, m, "B")] = B.detach().clone()
    return t, losses


def main():
    args, seed, gen = make_golden.parse_reference_args(__doc__)
    out = os.path.abspath(args.out)

    cfg = mlg.base_config("LlamaForCausalLM", "llama")
    mlg.write_model_dir(os.path.join(out, "base_plain"), cfg, make_golden.make_weights(cfg, gen, torch.float32))
    tensors = make_golden.make_weights(cfg, gen, torch.float32)
    plant(cfg, tensors)
    base_path = os.path.join(out, "base_massive")
    mlg.write_model_dir(base_path, cfg, tensors)
    w32 = tensors
    w = {k: v.to(torch.float64) for k, v in tensors.items()}
    ad = os.path.join(out, "adapters")
    prompt = [1] + torch.randint(3, cfg["vocab_size"], (PROMPT_LEN - 1,), generator=gen).tolist()
    base_logits = make_golden.reference_logits(cfg, w, prompt)

    adapters = {}  # name -> (tensors, scale, expectation, mentions, extra)

    targets = ["q_proj", "v_proj", "down_proj"]
    t, losses = train_lora(cfg, w32, gen, 8, 16, targets)
    mlg.write_adapter(os.path.join(ad, "trained_r8_qvd"), mlg.peft_config(base_path, 8, 16, False, targets), t)
    adapters["trained_r8_qvd"] = (t, 16 / 8, "OK", [], {"train_loss_first": losses[0], "train_loss_last": losses[-1]})

    t = mlg.make_lora(cfg, w, gen, 16, 32, False, mlg.ALL_MODULES, "F32", None)
    mlg.write_adapter(os.path.join(ad, "random_r16_all"), mlg.peft_config(base_path, 16, 32, False, mlg.ALL_MODULES), t)
    adapters["random_r16_all"] = (t, 32 / 16, "measured", [], {})

    W = w32[f"model.layers.{LAYER}.mlp.down_proj.weight"]
    A = -W[DIM:DIM + 1].clone()                          # [1, I]
    B = torch.zeros(W.shape[0], 1)
    B[DIM, 0] = 1.0                                      # [H, 1]: delta row DIM = -W[DIM, :]
    t = {mlg.lora_name(LAYER, "down_proj", "A"): A, mlg.lora_name(LAYER, "down_proj", "B"): B}
    mlg.write_adapter(os.path.join(ad, "broken_down_zero"),
                      mlg.peft_config(base_path, 1, 1, False, ["down_proj"], [LAYER]), t)
    adapters["broken_down_zero"] = (t, 1.0, "FAILED_PRECONDITION",
                                    [f"core dimension {DIM} ", f"layers.{LAYER}.mlp.down_proj"], {})

    Wq = w32["model.layers.2.self_attn.q_proj.weight"]
    A = torch.zeros(1, Wq.shape[1])
    A[0, DIM] = 1.0                                      # [1, H]
    B = 3.0 * Wq[:, DIM:DIM + 1].clone()                 # [QD, 1]: delta column DIM = 3 W[:, DIM]
    t = {mlg.lora_name(2, "q_proj", "A"): A, mlg.lora_name(2, "q_proj", "B"): B}
    mlg.write_adapter(os.path.join(ad, "broken_q_col"), mlg.peft_config(base_path, 1, 1, False, ["q_proj"], [2]), t)
    adapters["broken_q_col"] = (t, 1.0, "FAILED_PRECONDITION", [f"core dimension {DIM} ", "layers.2.self_attn.q_proj"], {})

    ref = {"seed": seed, "massive_dim": DIM, "massive_layer": LAYER, "super_weight": [LAYER, DIM, NEURON],
           "prompt_ids": prompt, "adapters": []}
    scale = float(base_logits.abs().max())
    for name, (t, s, expect, mentions, extra) in adapters.items():
        merged = mlg.merged_weights(w, [(t, s, 1.0)])
        diff = float((make_golden.reference_logits(cfg, merged, prompt) - base_logits).abs().max())
        ref["adapters"].append(dict({"name": name, "expect": expect, "mentions": mentions,
                                     "max_abs_logit_diff_vs_base": diff, "base_logit_scale": scale}, **extra))
    with open(os.path.join(out, "core_guard_reference.json"), "w") as f:
        json.dump(ref, f, indent=1)
    print(f"make_core_guard_fixture: base_massive (dim {DIM} from layer {LAYER}), {len(adapters)} adapters in "
          f"{args.out}; trained loss {losses[0]:.3f} -> {losses[-1]:.3f} (seed {seed}; rerun with --seed {seed})")


if __name__ == "__main__":
    main()
