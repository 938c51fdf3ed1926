#include "engine/tokenizer/decoder.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "engine/tokenizer/json_fields.h"
#include "engine/tokenizer/unicode_util.h"
#include "engine/util/status_macros.h"
#include "nlohmann/json.hpp"

namespace brickserve {
namespace {

using nlohmann::json;
namespace jf = json_fields;

class SequenceDecoder : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> steps) : steps_(std::move(steps)) {}
  std::vector<std::string> DecodeChain(std::vector<std::string> tokens) const override {
    for (const auto& s : steps_) tokens = s->DecodeChain(std::move(tokens));
    return tokens;
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(std::string from, std::string to) : from_(std::move(from)), to_(std::move(to)) {}
  std::vector<std::string> DecodeChain(std::vector<std::string> tokens) const override {
    for (auto& t : tokens) {
      if (t.find(from_) != std::string::npos) t = absl::StrReplaceAll(t, {{from_, to_}});
    }
    return tokens;
  }

 private:
  std::string from_, to_;
};

// Runs of <0xXX> tokens become text, decoded like JavaScript's default TextDecoder: invalid
// sequences become U+FFFD and a byte-order mark starting a run is dropped.
class ByteFallbackDecoder : public Decoder {
 public:
  std::vector<std::string> DecodeChain(std::vector<std::string> tokens) const override {
    std::vector<std::string> out;
    out.reserve(tokens.size());
    std::string bytes;
    auto flush = [&] {
      if (!bytes.empty()) out.push_back(unicode::SanitizeUtf8(bytes, /*strip_bom=*/true));
      bytes.clear();
    };
    for (auto& t : tokens) {
      if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' && absl::ascii_isxdigit(t[3]) &&
          absl::ascii_isxdigit(t[4])) {
        bytes.push_back(static_cast<char>(std::stoi(t.substr(3, 2), nullptr, 16)));
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
  std::vector<std::string> DecodeChain(std::vector<std::string> tokens) const override {
    std::string all;
    for (const auto& t : tokens) all += t;
    return {std::move(all)};
  }
};

// Removes up to `start` leading and `stop` trailing copies of one character from every token.
class StripDecoder : public Decoder {
 public:
  StripDecoder(std::string content, int start, int stop) : content_(std::move(content)), start_(start), stop_(stop) {}
  std::vector<std::string> DecodeChain(std::vector<std::string> tokens) const override {
    const size_t n = content_.size();
    for (auto& t : tokens) {
      size_t begin = 0, end = t.size();
      for (int i = 0; i < start_ && end - begin >= n && t.compare(begin, n, content_) == 0; ++i) begin += n;
      for (int i = 0; i < stop_ && end - begin >= n && t.compare(end - n, n, content_) == 0; ++i) end -= n;
      if (begin > 0 || end < t.size()) t = t.substr(begin, end - begin);
    }
    return tokens;
  }

 private:
  std::string content_;
  int start_, stop_;
};

// Byte-level tokens back to bytes, decoded with U+FFFD for invalid sequences (a byte-order mark
// is kept). Added tokens, when known, pass verbatim and split the byte runs. A token with a
// character outside GPT-2's table contributes its own UTF-8 bytes (HF tokenizers does this;
// transformers.js would write zero bytes).
class ByteLevelDecoder : public Decoder {
 public:
  explicit ByteLevelDecoder(const absl::flat_hash_set<std::string>* added) : added_(added) {}
  std::vector<std::string> DecodeChain(std::vector<std::string> tokens) const override {
    std::vector<std::string> out;
    std::string bytes;
    bool pending = false;
    auto flush = [&] {
      if (pending) out.push_back(unicode::SanitizeUtf8(bytes));
      bytes.clear();
      pending = false;
    };
    for (auto& t : tokens) {
      if (added_ != nullptr && added_->contains(t)) {
        flush();
        out.push_back(std::move(t));
        continue;
      }
      pending = true;
      const size_t mark = bytes.size();
      for (size_t p = 0; p < t.size();) {
        const int b = unicode::UnicodeToByte(unicode::NextCodePoint(t, &p));
        if (b < 0) {
          bytes.resize(mark);
          bytes += t;
          break;
        }
        bytes.push_back(static_cast<char>(b));
      }
    }
    flush();
    return out;
  }

 private:
  const absl::flat_hash_set<std::string>* added_;
};

class MetaspaceDecoder : public Decoder {
 public:
  MetaspaceDecoder(std::string replacement, bool add_prefix_space)
      : replacement_(std::move(replacement)), add_prefix_space_(add_prefix_space) {}
  std::vector<std::string> DecodeChain(std::vector<std::string> tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      tokens[i] = absl::StrReplaceAll(tokens[i], {{replacement_, " "}});
      if (add_prefix_space_ && i == 0 && !tokens[i].empty() && tokens[i][0] == ' ') tokens[i].erase(0, 1);
    }
    return tokens;
  }

 private:
  std::string replacement_;
  bool add_prefix_space_;
};

absl::StatusOr<std::unique_ptr<Decoder>> Make(const json& config, const std::string& where,
                                              const absl::flat_hash_set<std::string>* added, bool top_level) {
  if (config.is_null()) return nullptr;
  if (!config.is_object()) return absl::InvalidArgumentError(absl::StrCat(where, " must be an object or null"));
  BS_ASSIGN_OR_RETURN(const std::string type, jf::String(config, "type", where));
  if (type == "Sequence") {
    BS_ASSIGN_OR_RETURN(const json* list, jf::Array(config, "decoders", where));
    std::vector<std::unique_ptr<Decoder>> steps;
    for (size_t i = 0; i < list->size(); ++i) {
      BS_ASSIGN_OR_RETURN(auto step, Make((*list)[i], jf::Path(jf::Path(where, "decoders"), i), added, false));
      if (step) steps.push_back(std::move(step));
    }
    return std::make_unique<SequenceDecoder>(std::move(steps));
  }
  if (type == "Replace") {
    BS_ASSIGN_OR_RETURN(std::string from, jf::ReplaceStringPattern(config, where));
    BS_ASSIGN_OR_RETURN(std::string to, jf::String(config, "content", where));
    if (to.find('$') != std::string::npos) return jf::Unsupported(where, "content", to, "text without \"$\"");
    return std::make_unique<ReplaceDecoder>(std::move(from), std::move(to));
  }
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") {
    BS_ASSIGN_OR_RETURN(const std::string content, jf::String(config, "content", where));
    // transformers.js compares single UTF-16 units with the content.
    size_t p = 0;
    if (content.empty() || (unicode::NextCodePoint(content, &p), p != content.size()) || content.size() == 4) {
      return jf::Unsupported(where, "content", content, "one character of the Basic Multilingual Plane");
    }
    BS_ASSIGN_OR_RETURN(const int64_t start, jf::OptInt(config, "start", where, 0));
    BS_ASSIGN_OR_RETURN(const int64_t stop, jf::OptInt(config, "stop", where, 0));
    if (start < 0 || stop < 0 || start > 1000 || stop > 1000) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": start/stop out of range"));
    }
    return std::make_unique<StripDecoder>(content, static_cast<int>(start), static_cast<int>(stop));
  }
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>(top_level ? added : nullptr);
  if (type == "Metaspace") {
    BS_ASSIGN_OR_RETURN(const std::string replacement, jf::String(config, "replacement", where));
    if (replacement.empty()) return jf::Unsupported(where, "replacement", replacement, "a non-empty string");
    BS_ASSIGN_OR_RETURN(const std::string scheme, jf::OptString(config, "prepend_scheme", where, "always"));
    const bool has_flag = config.contains("add_prefix_space") && !config["add_prefix_space"].is_null();
    if (!has_flag && scheme != "never") {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": Metaspace without add_prefix_space (the tokenizers >= 0.19 form) is not supported"));
    }
    BS_ASSIGN_OR_RETURN(const bool add_prefix_space, jf::OptBool(config, "add_prefix_space", where, false));
    return std::make_unique<MetaspaceDecoder>(replacement, add_prefix_space);
  }
  return jf::Unsupported(where, "type", type, "Sequence, Replace, ByteFallback, Fuse, Strip, ByteLevel, Metaspace");
}

}  // namespace

absl::StatusOr<std::unique_ptr<Decoder>> MakeDecoder(const json& config, const std::string& where,
                                                     const absl::flat_hash_set<std::string>* added_contents) {
  return Make(config, where, added_contents, /*top_level=*/true);
}

}  // namespace brickserve
