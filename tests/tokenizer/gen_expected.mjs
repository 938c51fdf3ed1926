// Writes the tokenizer oracle's expectations: for each tokenizer, >= 2,000 varied strings with the
// ids transformers.js encodes them to and the text it decodes those ids back to, plus decodes of
// random id sequences. Deterministic for a given seed.
//
//   node gen_expected.mjs OUT_DIR SHARED_DIR [SEED]
import fs from "fs";
import path from "path";
import { fileURLToPath } from "url";

const here = path.dirname(fileURLToPath(import.meta.url));
const [outDir, sharedDir, seedArg] = process.argv.slice(2);
if (!outDir) {
  console.error("usage: gen_expected.mjs OUT_DIR SHARED_DIR [SEED]");
  process.exit(2);
}
let TokenizerLoader;
try {
  ({ TokenizerLoader } = await import("@lenml/tokenizers"));
} catch (e) {
  console.log(`gen_expected: transformers.js not installed (run tests/tokenizer/install_oracle.sh); no expectations written`);
  process.exit(0);
}

// mulberry32: small, seedable, identical on every node version.
let state = Number(seedArg ?? 20261122) >>> 0;
function rand() {
  state = (state + 0x6d2b79f5) >>> 0;
  let t = state;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const int = (n) => Math.floor(rand() * n);
const pick = (a) => a[int(a.length)];
const range = (lo, hi) => String.fromCodePoint(lo + int(hi - lo + 1));
const repeat = (n, f) => Array.from({ length: n }, f).join("");

const WORDS = ("the of and to in is was for on that with as by at from his her it an were are which this be " +
  "kernel memory device driver schedule buffer allocate process thread signal Linux function value return " +
  "Hello world OpenAI München naïve café résumé coöperate façade Zürich São Paulo").split(" ");
const PUNCT = [".", ",", "!", "?", ";", ":", "...", " -", "—", "(", ")", "\"", "'", "«", "»", "“", "”"];
const CONTRACTIONS = ["don't", "DON'T", "I'LL", "i'Ll", "we've", "You'RE", "she'd", "it's", "IT'S", "I'm", "they'D", "can't", "o'clock", "'s", "'S"];
const CODE = [
  () => `int ${pick(WORDS)}_${int(99)}(void) {\n\treturn ${int(1000)};\n}\n`,
  () => `def ${pick(WORDS)}(x, y=${int(9)}):\n    return x ** ${int(5)} + y  # comment\n`,
  () => `for (let i = 0; i < ${int(100)}; i++) { arr[i] += i >> 1; }`,
  () => `#include <stdio.h>\n#define MAX_${int(9)} 0x${int(65535).toString(16).toUpperCase()}\n`,
  () => `SELECT * FROM t WHERE id = ${int(1e6)} AND name LIKE '%${pick(WORDS)}%';`,
  () => `{"key": "${pick(WORDS)}", "n": ${rand().toFixed(4)}, "ok": true}`,
  () => `    if x != y:\r\n        pass\r\n`,
  () => `fn main() -> Result<(), Box<dyn Error>> { println!("{}", ${int(42)}); Ok(()) }`,
];
const EMOJI = ["👍", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇫🇷", "🇯🇵", "❤️", "😀", "🤖", "🧠", "👩🏿‍💻", "✅", "🎉", "©", "™", "⚡"];
const WS = [" ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\r\n", "\r", " \n ", "\u00a0", "\u3000", "\u000b", "\u000c", "\u2003", "\u0085", "\ufeff"];
const SPECIAL_TEXT = ["<s>", "</s>", "<unk>", "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>",
  "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>", "<tool_call>", "<|fim_prefix|>", "<0x41>", "<|", "|>"];
const COMBINING = ["e\u0301", "a\u0308", "n\u0303", "o\u0302\u0323", "\u1ec7", "é", "Å", "A\u030a", "ﬁ", "Ⅳ", "①", "ｶ", "ｱﾞ"];

const GENERATORS = [
  () => repeat(1 + int(12), () => pick(WORDS) + (rand() < 0.2 ? pick(PUNCT) : "") + " ").trim(),
  () => repeat(1 + int(20), () => (rand() < 0.1 ? pick(["，", "。", "、", "！", "？", "《", "》"]) : range(0x4e00, 0x9fa5))),
  () => repeat(1 + int(15), () => pick([() => range(0x3041, 0x3096), () => range(0x30a1, 0x30fa), () => range(0x4e00, 0x9fa5), () => "ー"])()),
  () => repeat(1 + int(10), () => range(0xac00, 0xd7a3) + (rand() < 0.3 ? " " : "")),
  () => pick(CODE)(),
  () => repeat(1 + int(6), () => pick(EMOJI) + (rand() < 0.5 ? " " : "")),
  () => repeat(1 + int(5), () => String(int(10 ** (1 + int(9)))) + pick(["", " ", ",", ".", "-", "/", ":"])),
  () => repeat(1 + int(6), () => pick(WS)) + pick(WORDS) + repeat(int(4), () => pick(WS)),
  () => repeat(1 + int(4), () => pick(CONTRACTIONS) + " " + pick(WORDS) + " "),
  () => pick(WORDS) + pick(SPECIAL_TEXT) + (rand() < 0.5 ? " " : "") + pick(WORDS) + pick(SPECIAL_TEXT),
  () => repeat(1 + int(6), () => pick(COMBINING) + (rand() < 0.3 ? " " : "")),
  // Random assigned code points: Latin, Greek, Cyrillic, Arabic, Hebrew, Devanagari, Thai, symbols.
  () => repeat(1 + int(12), () => pick([[0x20, 0x7e], [0xa1, 0x24f], [0x370, 0x3ff], [0x400, 0x4ff], [0x5d0, 0x5ea],
                                         [0x620, 0x64a], [0x905, 0x939], [0xe01, 0xe30], [0x2190, 0x21ff], [0x2200, 0x22ff],
                                         [0x2500, 0x257f], [0x1f300, 0x1f5ff], [0x1f900, 0x1f9ff]].map(([a, b]) => () => range(a, b)))()),
  () => "",
  () => pick([" ", "a", "\n", "'", "''", "▁", "▁▁x", "\ufffd", "\u0000", "\u001f"]),
];

function makeStrings(n) {
  const out = [];
  while (out.length < n) {
    let s = pick(GENERATORS)();
    if (rand() < 0.25) s += pick(GENERATORS)();  // mixtures
    out.push(s);
  }
  return out;
}

const lenml = path.join(here, "node_modules", "@lenml");
const TOKENIZERS = [
  ["llama2", path.join(lenml, "tokenizer-llama2", "models")],
  ["llama3", path.join(lenml, "tokenizer-llama3", "models")],
  ["qwen3", path.join(lenml, "tokenizer-qwen3", "models")],
  ["brick-tiny", sharedDir ? path.join(sharedDir, "models", "brick-tiny") : ""],
];

fs.mkdirSync(outDir, { recursive: true });
for (const [name, dir] of TOKENIZERS) {
  const tjPath = path.join(dir, "tokenizer.json");
  if (!dir || !fs.existsSync(tjPath)) {
    console.log(`gen_expected: ${name}: ${tjPath} not found, skipped`);
    continue;
  }
  const cfgPath = path.join(dir, "tokenizer_config.json");
  const tokenizer = TokenizerLoader.fromPreTrained({
    tokenizerJSON: JSON.parse(fs.readFileSync(tjPath, "utf8")),
    tokenizerConfig: JSON.parse(fs.readFileSync(cfgPath, "utf8")),
  });
  const vocab = tokenizer.model.vocab.length;
  // transformers.js refuses to decode an empty list; its text is empty.
  const decode = (ids, skip) => (ids.length ? tokenizer.decode(ids, { skip_special_tokens: skip }) : "");
  const cases = makeStrings(2200).map((s) => {
    const ids = tokenizer.encode(s);
    return { s, ids, dec: decode(ids, false), dec_skip: decode(ids, true) };
  });
  // Random ids exercise the decoder beyond what encoding produces (partial UTF-8, stray specials).
  const decodes = Array.from({ length: 300 }, () => {
    const ids = Array.from({ length: 1 + int(12) }, () => (rand() < 0.5 ? int(Math.min(vocab, 600)) : int(vocab)));
    return { ids, dec: decode(ids, false), dec_skip: decode(ids, true) };
  });
  const out = { name, tokenizer_json: tjPath, tokenizer_config: cfgPath, cases, decodes };
  fs.writeFileSync(path.join(outDir, `${name}.json`), JSON.stringify(out));
  console.log(`gen_expected: ${name}: ${cases.length} strings, ${decodes.length} id sequences`);
}
