#include "engine/tokenizer/pre_tokenizer.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "engine/tokenizer/js_regex.h"
#include "engine/tokenizer/json_fields.h"
#include "engine/tokenizer/unicode_util.h"
#include "engine/util/status_macros.h"
#include "nlohmann/json.hpp"

namespace brickserve {
namespace {

using nlohmann::json;
namespace jf = json_fields;

// GPT-2's split, as transformers.js' ByteLevel pre-tokenizer writes it.
constexpr char kGpt2Pattern[] = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> steps) : steps_(std::move(steps)) {}
  std::vector<std::string> Split(std::vector<std::string> words, bool first_section) const override {
    for (const auto& s : steps_) words = s->Split(std::move(words), first_section);
    return words;
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

// Split with behavior Isolated: the matches and the text between them are all words.
class RegexSplitPreTokenizer : public PreTokenizer {
 public:
  explicit RegexSplitPreTokenizer(std::unique_ptr<JsRegex> regex) : regex_(std::move(regex)) {}
  std::vector<std::string> Split(std::vector<std::string> words, bool) const override {
    std::vector<std::string> out;
    for (const auto& w : words) {
      auto parts = regex_->SplitIsolated(w);
      for (auto& p : parts) out.push_back(std::move(p));
    }
    return out;
  }

 private:
  std::unique_ptr<JsRegex> regex_;
};

class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, std::unique_ptr<JsRegex> regex)
      : add_prefix_space_(add_prefix_space), regex_(std::move(regex)) {}
  std::vector<std::string> Split(std::vector<std::string> words, bool) const override {
    if (add_prefix_space_) {
      for (auto& w : words) {
        if (w.empty() || w[0] != ' ') w.insert(0, 1, ' ');
      }
    }
    if (regex_) {
      // text.match(pattern): the matches only.
      std::vector<std::string> matched;
      for (const auto& w : words) {
        for (auto& p : regex_->Matches(w)) matched.push_back(std::move(p));
      }
      words = std::move(matched);
    }
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
  std::unique_ptr<JsRegex> regex_;
};

class MetaspacePreTokenizer : public PreTokenizer {
 public:
  MetaspacePreTokenizer(std::string replacement, bool add_prefix_space, std::string prepend_scheme)
      : replacement_(std::move(replacement)), add_prefix_space_(add_prefix_space), prepend_scheme_(std::move(prepend_scheme)) {}
  std::vector<std::string> Split(std::vector<std::string> words, bool first_section) const override {
    // transformers.js neither splits on the replacement nor prepends without add_prefix_space.
    const bool prepend = add_prefix_space_ && (prepend_scheme_ == "always" || (prepend_scheme_ == "first" && first_section));
    for (auto& w : words) {
      w = absl::StrReplaceAll(w, {{" ", replacement_}});
      if (prepend && w.compare(0, replacement_.size(), replacement_) != 0) w.insert(0, replacement_);
    }
    return words;
  }

 private:
  std::string replacement_;
  bool add_prefix_space_;
  std::string prepend_scheme_;
};

absl::StatusOr<std::unique_ptr<PreTokenizer>> MakeSplit(const json& config, const std::string& where) {
  BS_ASSIGN_OR_RETURN(const bool invert, jf::OptBool(config, "invert", where, false));
  if (invert) return jf::Unsupported(where, "invert", true, "false");
  BS_ASSIGN_OR_RETURN(const std::string behavior, jf::OptString(config, "behavior", where, "Isolated"));
  // transformers.js treats every behavior but Removed as Isolated; only Isolated means that.
  if (behavior != "Isolated") return jf::Unsupported(where, "behavior", behavior, "Isolated");
  const json& pattern = config.contains("pattern") ? config["pattern"] : json();
  const bool is_regex = pattern.is_object() && pattern.contains("Regex") && pattern["Regex"].is_string();
  const bool is_string = pattern.is_object() && pattern.contains("String") && pattern["String"].is_string();
  if (!is_regex && !is_string) return jf::Unsupported(where, "pattern", pattern, "{\"Regex\": ..} or {\"String\": ..}");
  const std::string source = pattern[is_regex ? "Regex" : "String"].get<std::string>();
  if (source.empty()) return jf::Unsupported(where, "pattern", pattern, "a non-empty pattern");
  BS_ASSIGN_OR_RETURN(auto regex, JsRegex::Compile(source, /*literal=*/is_string, where));
  return std::make_unique<RegexSplitPreTokenizer>(std::move(regex));
}

}  // namespace

std::unique_ptr<PreTokenizer> MakeMetaspace(std::string replacement, bool add_prefix_space, std::string prepend_scheme) {
  return std::make_unique<MetaspacePreTokenizer>(std::move(replacement), add_prefix_space, std::move(prepend_scheme));
}

absl::StatusOr<std::unique_ptr<PreTokenizer>> MakePreTokenizer(const json& config, const std::string& where) {
  if (config.is_null()) return nullptr;
  if (!config.is_object()) return absl::InvalidArgumentError(absl::StrCat(where, " must be an object or null"));
  BS_ASSIGN_OR_RETURN(const std::string type, jf::String(config, "type", where));
  if (type == "Sequence") {
    BS_ASSIGN_OR_RETURN(const json* list, jf::Array(config, "pretokenizers", where));
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    for (size_t i = 0; i < list->size(); ++i) {
      BS_ASSIGN_OR_RETURN(auto step, MakePreTokenizer((*list)[i], jf::Path(jf::Path(where, "pretokenizers"), i)));
      if (step) steps.push_back(std::move(step));
    }
    return std::make_unique<SequencePreTokenizer>(std::move(steps));
  }
  if (type == "Split") return MakeSplit(config, where);
  if (type == "ByteLevel") {
    BS_ASSIGN_OR_RETURN(const bool add_prefix_space, jf::OptBool(config, "add_prefix_space", where, false));
    BS_ASSIGN_OR_RETURN(const bool use_regex, jf::OptBool(config, "use_regex", where, true));
    std::unique_ptr<JsRegex> regex;
    if (use_regex) {
      BS_ASSIGN_OR_RETURN(regex, JsRegex::Compile(kGpt2Pattern, false, where));
    }
    return std::make_unique<ByteLevelPreTokenizer>(add_prefix_space, std::move(regex));
  }
  if (type == "Metaspace") {
    BS_ASSIGN_OR_RETURN(const std::string replacement, jf::String(config, "replacement", where));
    BS_ASSIGN_OR_RETURN(const std::string str_rep, jf::OptString(config, "str_rep", where, replacement));
    if (str_rep != replacement) return jf::Unsupported(where, "str_rep", str_rep, "the replacement");
    BS_ASSIGN_OR_RETURN(const std::string scheme, jf::OptString(config, "prepend_scheme", where, "always"));
    if (scheme != "always" && scheme != "first" && scheme != "never") {
      return jf::Unsupported(where, "prepend_scheme", scheme, "always, first, never");
    }
    // The newer form (prepend_scheme without add_prefix_space, split) is read differently by
    // transformers.js (never prepends, never splits) and HF tokenizers: refuse it.
    const bool has_flag = config.contains("add_prefix_space") && !config["add_prefix_space"].is_null();
    if (!has_flag && scheme != "never") {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": Metaspace without add_prefix_space (the tokenizers >= 0.19 form) is not supported"));
    }
    BS_ASSIGN_OR_RETURN(const bool add_prefix_space, jf::OptBool(config, "add_prefix_space", where, false));
    BS_ASSIGN_OR_RETURN(const bool split, jf::OptBool(config, "split", where, false));
    if (split) return jf::Unsupported(where, "split", true, "false");
    return MakeMetaspace(replacement, add_prefix_space, scheme);
  }
  return jf::Unsupported(where, "type", type, "Sequence, Split, ByteLevel, Metaspace");
}

}  // namespace brickserve
