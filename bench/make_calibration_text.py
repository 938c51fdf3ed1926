#!/usr/bin/python3
"""Writes module-build calibration text from the TAILS of brick-tiny's eval files.

Perplexity is measured on the first chunks of each eval file (../shared/README.md: 8 chunks of 255
tokens); this takes text only from the second half of each file, so calibration never sees the
measured text. Domains are interleaved in blocks so every part of the calibration mixes them.

Usage: make_calibration_text.py --eval-dir DIR --out FILE [--chars-per-domain 12000] [--block 1500]
"""
import argparse
import os

ap = argparse.ArgumentParser()
ap.add_argument("--eval-dir", required=True)
ap.add_argument("--out", required=True)
ap.add_argument("--chars-per-domain", type=int, default=12000)
ap.add_argument("--block", type=int, default=1500)
a = ap.parse_args()

tails = {}
for name in sorted(os.listdir(a.eval_dir)):
    if name.endswith(".txt"):
        text = open(os.path.join(a.eval_dir, name), encoding="utf-8").read()
        tails[name] = text[len(text) // 2:][: a.chars_per_domain]
parts = []
for off in range(0, a.chars_per_domain, a.block):
    for name in sorted(tails):
        block = tails[name][off: off + a.block]
        if block:
            parts.append(block)
with open(a.out, "w", encoding="utf-8") as f:
    f.write("\n".join(parts))
print(f"wrote {a.out}: {sum(len(p) for p in parts)} chars from {', '.join(sorted(tails))}")
