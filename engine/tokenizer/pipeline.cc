#include "engine/tokenizer/pipeline.h"

#include <unicode/normalizer2.h>
#include <unicode/regex.h>
#include <unicode/unistr.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "engine/tokenizer/unicode_util.h"
#include "nlohmann/json.hpp"

namespace brickserve {
namespace {

using nlohmann::json;

absl::Status Unsupported(const std::string& stage, const json& config) {
  return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", stage, ".type \"",
                                                 config.value("type", std::string("?")), "\" is not supported"));
}

// The literal string of a {"String": s} pattern; regex patterns are refused where unsupported.
absl::StatusOr<std::string> StringPattern(const json& config, const std::string& stage) {
  if (config.contains("pattern") && config["pattern"].contains("String")) {
    return config["pattern"]["String"].get<std::string>();
  }
  return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", stage, " with a Regex pattern is not supported"));
}

// ---- normalizers ----

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> s) : steps_(std::move(s)) {}
  std::string Normalize(std::string text) const override {
    for (const auto& s : steps_) text = s->Normalize(std::move(text));
    return text;
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(std::string p) : prefix_(std::move(p)) {}
  std::string Normalize(std::string text) const override { return prefix_ + text; }

 private:
  std::string prefix_;
};

class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(std::string from, std::string to) : from_(std::move(from)), to_(std::move(to)) {}
  std::string Normalize(std::string text) const override { return absl::StrReplaceAll(text, {{from_, to_}}); }

 private:
  std::string from_, to_;
};

class UnicodeNormalizer : public Normalizer {
 public:
  explicit UnicodeNormalizer(const icu::Normalizer2* n) : n_(n) {}
  std::string Normalize(std::string text) const override {
    UErrorCode err = U_ZERO_ERROR;
    icu::UnicodeString out = n_->normalize(icu::UnicodeString::fromUTF8(text), err);
    std::string s;
    return U_FAILURE(err) ? text : out.toUTF8String(s);
  }

 private:
  const icu::Normalizer2* n_;
};

// ---- pre-tokenizers ----

// JavaScript's \s, written out: ICU's \s is Unicode White_Space, which differs from it (ICU adds
// U+0085, JS adds U+FEFF), and transformers.js is the reference.
constexpr char kJsWhitespace[] =
    "\\t\\n\\x{0B}\\f\\r\\x{20}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}\\x{FEFF}";

// Rewrites a tokenizer.json regex (Rust/Oniguruma syntax) into ICU syntax with the meaning
// transformers.js gives it.
std::string ToIcuPattern(std::string p) {
  // (?i:...) on the contractions is what transformers.js expands into explicit classes.
  p = absl::StrReplaceAll(p, {{"(?i:'s|'t|'re|'ve|'m|'ll|'d)", "(?:'([sS]|[tT]|[rR][eE]|[vV][eE]|[mM]|[lL][lL]|[dD]))"}});
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char e = p[i + 1];
      ++i;
      if (e == 's') {
        out += in_class ? std::string(kJsWhitespace) : absl::StrCat("[", kJsWhitespace, "]");
      } else if (e == 'S' && !in_class) {
        out += absl::StrCat("[^", kJsWhitespace, "]");
      } else {
        out += '\\';
        out += e;
      }
      continue;
    }
    if (c == '[') in_class = true;
    if (c == ']') in_class = false;
    out += c;
  }
  return out;
}

class RegexSplitPreTokenizer : public PreTokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<PreTokenizer>> Make(const std::string& pattern, bool removed) {
    UErrorCode err = U_ZERO_ERROR;
    UParseError perr;
    auto re = std::unique_ptr<icu::RegexPattern>(
        icu::RegexPattern::compile(icu::UnicodeString::fromUTF8(ToIcuPattern(pattern)), 0, perr, err));
    if (U_FAILURE(err)) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: Split regex does not compile: ", pattern));
    }
    return std::unique_ptr<PreTokenizer>(new RegexSplitPreTokenizer(std::move(re), removed));
  }

  // transformers.js regexSplit: matches and the gaps between them are both kept (Isolated).
  std::vector<std::string> Split(std::vector<std::string> words) const override {
    std::vector<std::string> out;
    for (const auto& w : words) {
      const icu::UnicodeString text = icu::UnicodeString::fromUTF8(w);
      UErrorCode err = U_ZERO_ERROR;
      std::unique_ptr<icu::RegexMatcher> m(pattern_->matcher(text, err));
      int32_t prev = 0;
      auto emit = [&](int32_t b, int32_t e) {
        std::string s;
        text.tempSubStringBetween(b, e).toUTF8String(s);
        out.push_back(std::move(s));
      };
      while (U_SUCCESS(err) && m->find(err)) {
        const int32_t b = m->start(err), e = m->end(err);
        if (prev < b) emit(prev, b);
        if (e > b && !removed_) emit(b, e);
        prev = e;
      }
      if (prev < text.length()) emit(prev, text.length());
    }
    return out;
  }

 private:
  RegexSplitPreTokenizer(std::unique_ptr<icu::RegexPattern> p, bool removed) : pattern_(std::move(p)), removed_(removed) {}
  std::unique_ptr<icu::RegexPattern> pattern_;
  bool removed_;
};

class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, std::unique_ptr<PreTokenizer> regex)
      : add_prefix_space_(add_prefix_space), regex_(std::move(regex)) {}
  std::vector<std::string> Split(std::vector<std::string> words) const override {
    if (add_prefix_space_) {
      for (auto& w : words) {
        if (w.empty() || w[0] != ' ') w = " " + w;
      }
    }
    if (regex_) words = regex_->Split(std::move(words));
    const auto& table = unicode::ByteToUnicode();
    for (auto& w : words) {
      std::string mapped;
      mapped.reserve(w.size() * 2);
      for (unsigned char c : w) mapped += table[c];
      w = std::move(mapped);
    }
    return words;
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<PreTokenizer> regex_;
};

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> s) : steps_(std::move(s)) {}
  std::vector<std::string> Split(std::vector<std::string> words) const override {
    for (const auto& s : steps_) words = s->Split(std::move(words));
    return words;
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

// GPT-2's split, as transformers.js' ByteLevel pre-tokenizer writes it.
constexpr char kGpt2Pattern[] = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// ---- decoders ----

class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(std::string from, std::string to) : from_(std::move(from)), to_(std::move(to)) {}
  std::vector<std::string> DecodeChain(std::vector<std::string> t, const std::vector<bool>&) const override {
    for (auto& s : t) s = absl::StrReplaceAll(s, {{from_, to_}});
    return t;
  }

 private:
  std::string from_, to_;
};

// Runs of <0xXX> tokens become text, decoded like JavaScript's default TextDecoder (which also
// drops a leading byte-order mark of each run).
class ByteFallbackDecoder : public Decoder {
 public:
  std::vector<std::string> DecodeChain(std::vector<std::string> tokens, const std::vector<bool>&) const override {
    std::vector<std::string> out;
    std::string bytes;
    auto flush = [&] {
      if (!bytes.empty()) out.push_back(unicode::SanitizeUtf8(bytes, /*strip_bom=*/true));
      bytes.clear();
    };
    for (auto& t : tokens) {
      int byte = -1;
      if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' && std::isxdigit(t[3]) && std::isxdigit(t[4])) {
        byte = std::stoi(t.substr(3, 2), nullptr, 16);
      }
      if (byte >= 0) {
        bytes.push_back(static_cast<char>(byte));
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    return out;
  }
};

class FuseDecoder : public Decoder {
 public:
  std::vector<std::string> DecodeChain(std::vector<std::string> t, const std::vector<bool>&) const override {
    std::string all;
    for (const auto& s : t) all += s;
    return {all};
  }
};

class StripDecoder : public Decoder {
 public:
  StripDecoder(std::string content, int start, int stop) : content_(std::move(content)), start_(start), stop_(stop) {}
  std::vector<std::string> DecodeChain(std::vector<std::string> t, const std::vector<bool>&) const override {
    for (auto& s : t) {
      for (int i = 0; i < start_ && s.compare(0, content_.size(), content_) == 0; ++i) s.erase(0, content_.size());
      for (int i = 0; i < stop_ && s.size() >= content_.size() &&
                      s.compare(s.size() - content_.size(), content_.size(), content_) == 0;
           ++i) {
        s.resize(s.size() - content_.size());
      }
    }
    return t;
  }

 private:
  std::string content_;
  int start_, stop_;
};

// Byte-level tokens map back to bytes (decoded with replacement, BOM kept); added tokens pass as is.
class ByteLevelDecoder : public Decoder {
 public:
  std::vector<std::string> DecodeChain(std::vector<std::string> tokens, const std::vector<bool>& added) const override {
    std::vector<std::string> out;
    std::string bytes;
    bool pending = false;
    auto flush = [&] {
      if (pending) out.push_back(unicode::SanitizeUtf8(bytes));
      bytes.clear();
      pending = false;
    };
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (added[i]) {
        flush();
        out.push_back(tokens[i]);
        continue;
      }
      pending = true;
      const std::string& t = tokens[i];
      for (size_t p = 0; p < t.size();) {
        const int b = unicode::UnicodeToByte(unicode::NextCodePoint(t, &p));
        if (b >= 0) bytes.push_back(static_cast<char>(b));
      }
    }
    flush();
    return out;
  }
};

class SequenceDecoder : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> s) : steps_(std::move(s)) {}
  std::vector<std::string> DecodeChain(std::vector<std::string> t, const std::vector<bool>& added) const override {
    // Added-token flags describe the original tokens; steps after a fusing step see none.
    std::vector<bool> flags = added;
    for (const auto& s : steps_) {
      t = s->DecodeChain(std::move(t), flags);
      if (flags.size() != t.size()) flags.assign(t.size(), false);
    }
    return t;
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Normalizer>> MakeNormalizer(const json& c) {
  if (c.is_null()) return nullptr;
  const std::string type = c.value("type", std::string());
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (const auto& s : c["normalizers"]) {
      auto n = MakeNormalizer(s);
      if (!n.ok()) return n.status();
      if (*n) steps.push_back(std::move(*n));
    }
    return std::unique_ptr<Normalizer>(new SequenceNormalizer(std::move(steps)));
  }
  if (type == "Prepend") return std::unique_ptr<Normalizer>(new PrependNormalizer(c.value("prepend", std::string())));
  if (type == "Replace") {
    auto from = StringPattern(c, "normalizer Replace");
    if (!from.ok()) return from.status();
    return std::unique_ptr<Normalizer>(new ReplaceNormalizer(*from, c.value("content", std::string())));
  }
  UErrorCode err = U_ZERO_ERROR;
  const icu::Normalizer2* n = nullptr;
  if (type == "NFC") n = icu::Normalizer2::getNFCInstance(err);
  if (type == "NFD") n = icu::Normalizer2::getNFDInstance(err);
  if (type == "NFKC") n = icu::Normalizer2::getNFKCInstance(err);
  if (type == "NFKD") n = icu::Normalizer2::getNFKDInstance(err);
  if (n != nullptr && U_SUCCESS(err)) return std::unique_ptr<Normalizer>(new UnicodeNormalizer(n));
  return Unsupported("normalizer", c);
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> MakePreTokenizer(const json& c) {
  if (c.is_null()) return nullptr;
  const std::string type = c.value("type", std::string());
  if (type == "Sequence") {
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    for (const auto& s : c["pretokenizers"]) {
      auto p = MakePreTokenizer(s);
      if (!p.ok()) return p.status();
      if (*p) steps.push_back(std::move(*p));
    }
    return std::unique_ptr<PreTokenizer>(new SequencePreTokenizer(std::move(steps)));
  }
  if (type == "Split") {
    if (c.value("invert", false)) return absl::InvalidArgumentError("tokenizer.json: Split with invert=true is not supported");
    const std::string behavior = c.value("behavior", std::string("Isolated"));
    if (behavior != "Isolated" && behavior != "Removed") {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: Split behavior \"", behavior,
                                                     "\" is not supported (supported: Isolated, Removed)"));
    }
    if (!c.contains("pattern") || !c["pattern"].contains("Regex")) {
      return absl::InvalidArgumentError("tokenizer.json: Split needs a Regex pattern");
    }
    return RegexSplitPreTokenizer::Make(c["pattern"]["Regex"].get<std::string>(), behavior == "Removed");
  }
  if (type == "ByteLevel") {
    std::unique_ptr<PreTokenizer> regex;
    if (c.value("use_regex", true)) {
      auto r = RegexSplitPreTokenizer::Make(kGpt2Pattern, false);
      if (!r.ok()) return r.status();
      regex = std::move(*r);
    }
    return std::unique_ptr<PreTokenizer>(new ByteLevelPreTokenizer(c.value("add_prefix_space", false), std::move(regex)));
  }
  return Unsupported("pre_tokenizer", c);
}

absl::StatusOr<std::unique_ptr<Decoder>> MakeDecoder(const json& c) {
  if (c.is_null()) return nullptr;
  const std::string type = c.value("type", std::string());
  if (type == "Sequence") {
    std::vector<std::unique_ptr<Decoder>> steps;
    for (const auto& s : c["decoders"]) {
      auto d = MakeDecoder(s);
      if (!d.ok()) return d.status();
      if (*d) steps.push_back(std::move(*d));
    }
    return std::unique_ptr<Decoder>(new SequenceDecoder(std::move(steps)));
  }
  if (type == "Replace") {
    auto from = StringPattern(c, "decoder Replace");
    if (!from.ok()) return from.status();
    return std::unique_ptr<Decoder>(new ReplaceDecoder(*from, c.value("content", std::string())));
  }
  if (type == "ByteFallback") return std::unique_ptr<Decoder>(new ByteFallbackDecoder());
  if (type == "Fuse") return std::unique_ptr<Decoder>(new FuseDecoder());
  if (type == "Strip") {
    return std::unique_ptr<Decoder>(new StripDecoder(c.value("content", std::string(" ")), c.value("start", 0), c.value("stop", 0)));
  }
  if (type == "ByteLevel") return std::unique_ptr<Decoder>(new ByteLevelDecoder());
  return Unsupported("decoder", c);
}

}  // namespace brickserve
