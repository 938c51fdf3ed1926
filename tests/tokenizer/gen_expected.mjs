// Writes the tokenizer oracle's expectations: for each tokenizer, >= 2,000 varied strings with the
// ids transformers.js encodes them to (tokenizer.encode(s), add_special_tokens=true) and the text
// it decodes those ids back to (skip_special_tokens false and true), plus decodes of random id
// sequences. Besides the four real tokenizers it writes variants of them (other pre-tokenizers,
// decoders, post-processors, added-token flags, legacy=false) and a small synthetic BPE with
// edge cases, so each configuration the C++ tokenizer supports is judged by the oracle.
// Deterministic for a given seed.
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
// Expectations from an earlier run must not outlive the oracle (or the tokenizer files) they came from.
if (fs.existsSync(outDir)) {
  for (const f of fs.readdirSync(outDir)) if (f.endsWith(".json")) fs.rmSync(path.join(outDir, f));
  fs.rmSync(path.join(outDir, "variants"), { recursive: true, force: true });
}
let TokenizerLoader;
try {
  ({ TokenizerLoader } = await import("@lenml/tokenizers"));
} catch (e) {
  // Not an error: the C++ tests skip with instructions when no expectations exist.
  console.log("gen_expected: transformers.js not installed (run tests/tokenizer/install_oracle.sh); no expectations written");
  process.exit(0);
}
console.warn = () => {};  // transformers.js warns about tokenizer classes it does not know

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
const cp = (lo, hi) => String.fromCodePoint(lo + int(hi - lo + 1));
const repeat = (n, f) => Array.from({ length: n }, f).join("");

// ---- the strings ----

const WORDS = ("the of and to in is was for on that with as by at from his her it an were are which this be " +
  "kernel memory device driver schedule buffer allocate process thread signal Linux function value return " +
  "Hello world OpenAI München naïve café résumé coöperate façade Zürich São Paulo THE Of AnD iPhone eBay " +
  "x y z a I A supercalifragilisticexpialidocious antidisestablishmentarianism").split(" ");
const PUNCT = [".", ",", "!", "?", ";", ":", "...", " -", "—", "–", "(", ")", "\"", "'", "«", "»", "“", "”", "‘", "’",
  " .", " ,", " !", " ?", " ' ", "..", "?!", "¿", "¡", "…", "·", "•", "§", "¶", "@", "#", "$", "%", "^", "&", "*", "~", "`"];
const CONTRACTIONS = ["don't", "DON'T", "I'LL", "i'Ll", "I'Ll", "we've", "WE'VE", "we'Ve", "You'RE", "she'd", "SHE'D",
  "it's", "IT'S", "It'S", "I'm", "I'M", "they'D", "can't", "won't", "o'clock", "'s", "'S", "'t", "'re", "'ll", "'d",
  "rock 'n' roll", "it’s", "don’t", "y'all", "'''", "''s", " n't", " 'm", " 've", " 're", " 's"];
const CODE = [
  () => `int ${pick(WORDS)}_${int(99)}(void) {\n\treturn ${int(1000)};\n}\n`,
  () => `def ${pick(WORDS)}(x, y=${int(9)}):\n    return x ** ${int(5)} + y  # comment\n`,
  () => `for (let i = 0; i < ${int(100)}; i++) { arr[i] += i >> 1; }`,
  () => `#include <stdio.h>\n#define MAX_${int(9)} 0x${int(65535).toString(16).toUpperCase()}\n`,
  () => `SELECT * FROM t WHERE id = ${int(1e6)} AND name LIKE '%${pick(WORDS)}%';`,
  () => `{"key": "${pick(WORDS)}", "n": ${rand().toFixed(4)}, "ok": true, "list": [1, 2, 3]}`,
  () => `    if x != y:\r\n        pass\r\n`,
  () => `fn main() -> Result<(), Box<dyn Error>> { println!("{}", ${int(42)}); Ok(()) }`,
  () => `<div class="${pick(WORDS)}">\n  <a href="https://example.com/${pick(WORDS)}?q=${int(99)}&x=1">link</a>\n</div>`,
  () => `$ ls -la | grep -E '^d' && echo "done" > /dev/null 2>&1`,
  () => `\t\t}\n\t}\n}\n\n\n`,
  () => `x=${int(9)};y=x*2;z=(x+y)/3;print(f"{z:.2f}")`,
  () => `// TODO(${pick(WORDS)}): fix\n/* block\n * comment */`,
  () => `template <typename T>\nstd::vector<T> f(const T& t) { return {t, t}; }`,
];
const EMOJI = ["👍", "👍🏽", "👍🏿", "👨‍👩‍👧‍👦", "👩‍❤️‍💋‍👨", "🏳️‍🌈", "🏴‍☠️", "🇫🇷", "🇯🇵", "🇺🇸🇬🇧", "❤️", "❤", "😀", "🤖",
  "🧠", "👩🏿‍💻", "🧑🏻‍🤝‍🧑🏾", "✅", "🎉", "©", "™", "⚡", "1️⃣", "#️⃣", "☺️", "🫠", "🥲", "💯", "🔥🔥🔥", "🙂‍↔️"];
const WS = [" ", "  ", "   ", "    ", "\t", "\t\t", "\n", "\n\n", "\n\n\n", "\r\n", "\r", "\r\r\n", "\n\r", " \n ", " \t ",
  "\u00a0", "\u3000", "\u000b", "\u000c", "\u2003", "\u2009", "\u0085", "\ufeff", "\u2028", "\u2029", "\u200b", "\u1680",
  "\u202f", "\u205f", " \u00a0 ", "\t \n"];
const SPECIAL_TEXT = ["<s>", "</s>", "<unk>", "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>",
  "<|end_header_id|>", "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>", "<tool_call>",
  "<|fim_prefix|>", "<|reserved_special_token_7|>", "<|tool|>", "<0x41>", "<|", "|>", "<s", "s>", "<|im_start",
  "<<s>>", "<s></s>", "<|im_start|><|im_end|>", "</s><s>", "<|eot_id|><|start_header_id|>"];
const COMBINING = ["e\u0301", "a\u0308", "n\u0303", "o\u0302\u0323", "\u1ec7", "é", "Å", "A\u030a", "\u212b", "ﬁ", "Ⅳ",
  "①", "ｶ", "ｱﾞ", "\u1100\u1161\u11a8", "각", "\u0915\u094d\u0937", "ñ", "\u0301", "\u0301\u0301", "Ç", "C\u0327",
  "ṩ", "s\u0323\u0307", "s\u0307\u0323", "ﬃ", "²", "½", "ℌ", "Ｈｅｌｌｏ", "ǅ", "ß", "ẞ", "İ", "ı", "ſ", "K"];
const DIGITS = ["0", "7", "42", "123", "1234", "12345", "3.14159", "1,000,000", "2024-01-15", "+1 (555) 123-4567",
  "0x1F", "1e-9", "١٢٣", "१२३", "１２３", "²³", "Ⅻ", "½", "𝟙𝟚𝟛", "abc123def", "v1.2.3", "10000000000000000000"];

// Well-established blocks only: their letters and digits are the same in ICU 72 (Unicode 15.0,
// which the C++ side uses) and Node's newer Unicode.
const RANGES = [[0x20, 0x7e], [0xa1, 0x24f], [0x250, 0x2af], [0x370, 0x3ff], [0x400, 0x4ff], [0x530, 0x58a],
  [0x5d0, 0x5ea], [0x620, 0x64a], [0x660, 0x669], [0x905, 0x939], [0x966, 0x96f], [0xe01, 0xe3a], [0xe50, 0xe59],
  [0x10a0, 0x10ff], [0x1e00, 0x1eff], [0x2000, 0x206f], [0x20a0, 0x20bf], [0x2100, 0x214f], [0x2150, 0x218b],
  [0x2190, 0x21ff], [0x2200, 0x22ff], [0x2460, 0x24ff], [0x2500, 0x257f], [0x3041, 0x3096], [0x30a1, 0x30fa],
  [0x4e00, 0x9fa5], [0xac00, 0xd7a3], [0xe000, 0xe0ff], [0xff01, 0xff5e], [0x1d400, 0x1d6a5], [0x1f300, 0x1f5ff],
  [0x1f600, 0x1f64f], [0x20000, 0x2a6d6], [0x0, 0x1f]];

const GENERATORS = [
  () => repeat(1 + int(14), () => pick(WORDS) + (rand() < 0.25 ? pick(PUNCT) : "") + " ").trim(),
  () => repeat(1 + int(20), () => (rand() < 0.1 ? pick(["，", "。", "、", "！", "？", "《", "》", "：", "“", "”"]) : cp(0x4e00, 0x9fa5))),
  () => repeat(1 + int(15), () => pick([() => cp(0x3041, 0x3096), () => cp(0x30a1, 0x30fa), () => cp(0x4e00, 0x9fa5), () => "ー", () => "。"])()),
  () => repeat(1 + int(10), () => cp(0xac00, 0xd7a3) + (rand() < 0.3 ? " " : "")),
  () => pick(CODE)(),
  () => repeat(1 + int(6), () => pick(EMOJI) + (rand() < 0.5 ? " " : "")),
  () => repeat(1 + int(5), () => (rand() < 0.5 ? pick(DIGITS) : String(int(10 ** (1 + int(12))))) + pick(["", " ", ",", ".", "-", "/", ":", "\n"])),
  () => repeat(1 + int(6), () => pick(WS)) + pick(WORDS) + repeat(int(4), () => pick(WS)),
  () => repeat(1 + int(5), () => pick(WORDS) + pick(WS)) + repeat(int(3), () => pick(WS)),
  () => repeat(1 + int(4), () => pick(CONTRACTIONS) + pick([" ", "", "\n"]) + pick(WORDS) + " "),
  () => pick(WORDS) + pick(SPECIAL_TEXT) + pick(["", " ", "  ", "\n", "\t"]) + pick(WORDS) + pick(SPECIAL_TEXT) + pick(["", " x", "\n\n"]),
  () => pick(SPECIAL_TEXT) + pick(["", " "]) + pick(WORDS),
  () => repeat(1 + int(6), () => pick(COMBINING) + (rand() < 0.3 ? " " : "")),
  () => repeat(1 + int(12), () => { const [a, b] = pick(RANGES); return cp(a, b); }),
  () => "",
  () => pick([" ", "a", "\n", "'", "''", "▁", "▁▁x", "x▁y", "\ufffd", "\u0000", "\u001f", "Ġ", "Ċ", "ĠĠ", " ▁ ", "<0x0A>", "\u007f"]),
];

// Long inputs exercise the BPE on big words (and the C++ side's split of long words).
const LONG = [
  () => repeat(40 + int(200), () => pick(WORDS) + pick([" ", " ", ", ", ". "])),
  () => repeat(200 + int(800), () => pick(WORDS)),                    // no spaces at all
  () => "a".repeat(100 + int(400)),
  () => repeat(100 + int(300), () => cp(0x4e00, 0x9fa5)),
  () => " ".repeat(50 + int(200)) + "x" + "\n".repeat(20 + int(50)),
  () => repeat(50 + int(100), () => pick(EMOJI)),
  () => repeat(200, () => pick("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")) + "==",
  () => "1234567890".repeat(10 + int(40)),
  () => repeat(100 + int(200), () => pick(["-", "=", "*", "#", "_", "~", "."])),
];

function makeStrings(n) {
  const out = [];
  while (out.length < n) {
    let s = rand() < 0.03 ? pick(LONG)() : pick(GENERATORS)();
    if (rand() < 0.3) s += pick(GENERATORS)();  // mixtures
    if (rand() < 0.05) s = pick(WS) + s + pick(WS);
    out.push(s);
  }
  return out;
}

// ---- the tokenizers ----

const lenml = path.join(here, "node_modules", "@lenml");
const readJson = (p) => JSON.parse(fs.readFileSync(p, "utf8"));
const clone = (x) => structuredClone(x);
const base = {
  llama2: path.join(lenml, "tokenizer-llama2", "models"),
  llama3: path.join(lenml, "tokenizer-llama3", "models"),
  qwen3: path.join(lenml, "tokenizer-qwen3", "models"),
  "brick-tiny": sharedDir ? path.join(sharedDir, "models", "brick-tiny") : "",
};
const load = (name) => {
  const dir = base[name];
  if (!dir || !fs.existsSync(path.join(dir, "tokenizer.json"))) return null;
  return { json: readJson(path.join(dir, "tokenizer.json")), config: readJson(path.join(dir, "tokenizer_config.json")) };
};

const SPIECE = "\u2581";
const metaspace = (scheme) => ({ type: "Metaspace", replacement: SPIECE, add_prefix_space: true, prepend_scheme: scheme });

// name -> () => {json, config} | null. Variants derive from the real files.
const VARIANTS = {
  // Meta's own Llama 3 files: a template adds <|begin_of_text|>.
  "llama3-bos": (t) => {
    t.json.post_processor = { type: "Sequence", processors: [
      { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
      { type: "TemplateProcessing", single: [{ SpecialToken: { id: "<|begin_of_text|>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
        pair: [], special_tokens: {} }] };
    return t;
  },
  "llama3-no-ignore-merges": (t) => { t.json.model.ignore_merges = false; return t; },
  // GPT-2 style: plain ByteLevel pre-tokenizer with its own regex; clean-up on (the default).
  "gpt2-style": (t) => {
    t.json.normalizer = null;
    t.json.pre_tokenizer = { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true };
    t.config = { tokenizer_class: "GPT2Tokenizer", eos_token: "<|endoftext|>" };
    return t;
  },
  "gpt2-prefix-space": (t) => {
    t.json.normalizer = null;
    t.json.pre_tokenizer = { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true };
    t.json.post_processor = { type: "TemplateProcessing", single: [{ Sequence: { id: "A", type_id: 0 } }, { SpecialToken: { id: "<|endoftext|>", type_id: 0 } }] };
    t.config = { tokenizer_class: "GPT2Tokenizer", clean_up_tokenization_spaces: false };
    return t;
  },
  // The older SentencePiece form: Metaspace pre-tokenizer and decoder instead of the normalizer.
  "llama2-metaspace": (t) => {
    t.json.normalizer = null;
    t.json.pre_tokenizer = metaspace("first");
    t.json.decoder = { type: "Sequence", decoders: [{ type: "ByteFallback" }, metaspace("first"), { type: "Fuse" }] };
    return t;
  },
  "llama2-metaspace-always": (t) => {
    t.json.normalizer = null;
    t.json.pre_tokenizer = metaspace("always");
    t.json.decoder = metaspace("always");
    t.config.clean_up_tokenization_spaces = true;
    return t;
  },
  "llama2-nonlegacy": (t) => { t.config.legacy = false; return t; },
  // No byte fallback: unknown characters become <unk>, fused.
  "llama2-unk": (t) => { t.json.model.byte_fallback = false; t.json.model.fuse_unk = true; return t; },
  // Added-token flags, and added tokens beyond the vocabulary (special and not).
  "llama2-added": (t) => {
    const at = t.json.added_tokens;
    at.find((x) => x.content === "</s>").lstrip = true;
    at.find((x) => x.content === "<s>").rstrip = true;
    at.push({ id: 32000, content: "<|tool|>", single_word: false, lstrip: true, rstrip: true, normalized: false, special: false });
    at.push({ id: 32001, content: "<|im_start|>", single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
    at.push({ id: 32002, content: "<|im_start|><|im_end|>", single_word: false, lstrip: false, rstrip: true, normalized: false, special: true });
    t.json.post_processor.single.push({ SpecialToken: { id: "</s>", type_id: 0 } });
    t.config.additional_special_tokens = ["<|tool|>"];
    return t;
  },
};
const VARIANT_BASE = {
  "llama3-bos": "llama3", "llama3-no-ignore-merges": "llama3", "gpt2-style": "qwen3", "gpt2-prefix-space": "qwen3",
  "llama2-metaspace": "llama2", "llama2-metaspace-always": "llama2", "llama2-nonlegacy": "llama2", "llama2-unk": "llama2",
  "llama2-added": "llama2",
};

// A small BPE whose merges reach strings outside the vocabulary, repeat a pair (the last rank
// wins), and meet characters that only some merges know.
function synthetic() {
  const vocab = { "<unk>": 0, "<s>": 1, "</s>": 2 };
  const add = (t) => { if (!(t in vocab)) vocab[t] = Object.keys(vocab).length; };
  for (const c of [SPIECE, "a", "b", "c", "d", "e", "é", "x"]) add(c);
  const merges = [[SPIECE, "a"], ["a", "b"], ["b", "c"], [SPIECE + "a", "b"], ["c", "d"], ["d", "e"], ["a", "a"],
    ["aa", "aa"], ["b", "b"], ["bb", "b"], ["x", "y"], ["xy", "z"], ["c", "c"], ["e", "é"], ["a", "b"], [SPIECE, SPIECE]];
  for (const [a, b] of merges) {
    if (!["aa", "bb", "xy", "xyz", "ee"].includes(a + b)) add(a + b);  // some results stay outside the vocab
  }
  return {
    json: {
      version: "1.0", truncation: null, padding: null,
      added_tokens: [0, 1, 2].map((id) => ({ id, content: Object.keys(vocab)[id], single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
      normalizer: { type: "Sequence", normalizers: [{ type: "Prepend", prepend: SPIECE }, { type: "Replace", pattern: { String: " " }, content: SPIECE }] },
      pre_tokenizer: null,
      post_processor: { type: "TemplateProcessing", single: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }] },
      decoder: { type: "Sequence", decoders: [{ type: "Replace", pattern: { String: SPIECE }, content: " " }, { type: "Fuse" }, { type: "Strip", content: " ", start: 1, stop: 0 }] },
      model: { type: "BPE", dropout: null, unk_token: "<unk>", continuing_subword_prefix: null, end_of_word_suffix: null,
        fuse_unk: true, byte_fallback: false, vocab, merges },
    },
    config: { tokenizer_class: "LlamaTokenizer", bos_token: "<s>", eos_token: "</s>", clean_up_tokenization_spaces: false },
  };
}
const syntheticStrings = (n) => Array.from({ length: n }, () =>
  repeat(int(40), () => pick(["a", "b", "c", "d", "e", "é", "x", "y", "z", " ", "  ", "ab", "abc", "aaaa", "bbb", "xyz", "q", "<s>", "ü"])));

// ---- expectations ----

function expectations(name, t, strings, dir) {
  const tjPath = path.join(dir, "tokenizer.json"), cfgPath = path.join(dir, "tokenizer_config.json");
  const tokenizer = TokenizerLoader.fromPreTrained({ tokenizerJSON: t.json, tokenizerConfig: t.config });
  const vocab = tokenizer.model.vocab.length;
  // transformers.js refuses to decode an empty list; its text is empty.
  const decode = (ids, skip) => (ids.length ? tokenizer.decode(ids, { skip_special_tokens: skip }) : "");
  const cases = strings.map((s) => {
    const ids = tokenizer.encode(s);
    return { s, ids, dec: decode(ids, false), dec_skip: decode(ids, true) };
  });
  // Random ids exercise the decoder beyond what encoding produces (partial UTF-8, stray specials).
  const decodes = Array.from({ length: 300 }, () => {
    const ids = Array.from({ length: 1 + int(12) }, () => (rand() < 0.5 ? int(Math.min(vocab, 600)) : int(vocab)));
    return { ids, dec: decode(ids, false), dec_skip: decode(ids, true) };
  });
  fs.writeFileSync(path.join(outDir, `${name}.json`), JSON.stringify({ name, tokenizer_json: tjPath, tokenizer_config: cfgPath, cases, decodes }));
  console.log(`gen_expected: ${name}: ${cases.length} strings, ${decodes.length} id sequences`);
}

fs.mkdirSync(outDir, { recursive: true });
const writeVariant = (name, t) => {
  const dir = path.join(outDir, "variants", name);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, "tokenizer.json"), JSON.stringify(t.json));
  fs.writeFileSync(path.join(dir, "tokenizer_config.json"), JSON.stringify(t.config));
  return dir;
};
for (const name of Object.keys(base)) {
  const t = load(name);
  if (!t) {
    console.log(`gen_expected: ${name}: no tokenizer.json under ${base[name] || "(no shared dir)"}, skipped`);
    continue;
  }
  expectations(name, t, makeStrings(2200), base[name]);
}
for (const [name, make] of Object.entries(VARIANTS)) {
  const t = load(VARIANT_BASE[name]);
  if (!t) continue;
  const v = make(t);
  expectations(name, v, makeStrings(1000), writeVariant(name, v));
}
const s = synthetic();
expectations("synthetic", s, syntheticStrings(1000), writeVariant("synthetic", s));
