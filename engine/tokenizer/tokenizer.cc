// The tokenizer.json pipeline with transformers.js semantics: split the text on added tokens; per
// plain section normalizer -> pre-tokenizer -> BPE; post-processor special tokens around it all.
// Decoding: ids -> token strings -> decoder chain -> optional clean-up.
#include "engine/tokenizer/tokenizer.h"

#include <exception>
#include <fstream>
#include <sstream>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "engine/tokenizer/added_tokens.h"
#include "engine/tokenizer/bpe_model.h"
#include "engine/tokenizer/clean_up.h"
#include "engine/tokenizer/decoder.h"
#include "engine/tokenizer/json_fields.h"
#include "engine/tokenizer/normalizer.h"
#include "engine/tokenizer/post_processor.h"
#include "engine/tokenizer/pre_tokenizer.h"
#include "engine/tokenizer/unicode_util.h"
#include "engine/util/status_macros.h"
#include "nlohmann/json.hpp"

namespace brickserve {
namespace {

using nlohmann::json;
namespace jf = json_fields;

constexpr char kSpiece[] = "\xE2\x96\x81";  // U+2581, SentencePiece's space

absl::StatusOr<json> ReadJson(const std::string& path, const std::string& name) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(name, ": cannot read ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    json j = json::parse(ss.str());
    if (!j.is_object()) return absl::InvalidArgumentError(absl::StrCat(name, ": ", path, " is not a JSON object"));
    return j;
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": ", path, " is not valid JSON: ", e.what()));
  }
}

// tokenizer_config.json's bos_token etc.: a string, or an AddedToken object with "content".
absl::StatusOr<std::string> ConfigToken(const json& config, const char* key) {
  const std::string where = "tokenizer_config.json:";
  if (!config.contains(key) || config[key].is_null()) return std::string();
  const json& v = config[key];
  if (v.is_object()) return jf::OptString(v, "content", jf::Path(where, key), "");
  return jf::OptString(config, key, where, "");
}

class HfTokenizer final : public Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Create(const json& tj, const json& config);

  std::vector<int32_t> Encode(std::string_view text, bool add_special_tokens) const override;
  std::string Decode(std::span<const int32_t> ids, bool skip_special_tokens) const override {
    std::string text = DecodeVerbatim(ids, skip_special_tokens);
    return clean_up_ ? CleanUpTokenization(text) : text;
  }
  std::string DecodeVerbatim(std::span<const int32_t> ids, bool skip_special_tokens) const override;
  bool clean_up_tokenization_spaces() const override { return clean_up_; }
  int32_t vocab_size() const override { return model_->vocab_size(); }
  std::optional<int32_t> bos_id() const override { return bos_; }
  std::optional<int32_t> eos_id() const override { return eos_; }
  bool is_special(int32_t id) const override {
    return id >= 0 && id < static_cast<int32_t>(special_by_id_.size()) && special_by_id_[id];
  }
  std::string_view token_string(int32_t id) const override {
    const std::string* s = model_->token(id);
    return s != nullptr ? std::string_view(*s) : std::string_view();
  }
  std::optional<int32_t> token_id(std::string_view token) const override {
    const int32_t id = model_->Lookup(token);
    return id >= 0 ? std::optional<int32_t>(id) : std::nullopt;
  }

 private:
  HfTokenizer() = default;
  absl::Status ReadConfig(const json& config);
  void EncodeSection(const AddedTokens::Section& section, bool first, std::vector<int32_t>* ids) const;

  std::unique_ptr<BpeModel> model_;
  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<Decoder> decoder_;
  AddedTokens added_;
  // transformers.js judges "special" by token string: added tokens marked special and the
  // config's additional_special_tokens.
  absl::flat_hash_set<std::string> special_strings_;
  std::vector<bool> special_by_id_;
  std::vector<int32_t> prefix_ids_, suffix_ids_;  // post-processor special tokens
  bool clean_up_ = true;
  // LlamaTokenizer with legacy=false: transformers.js swaps the normalizer for a Metaspace
  // pre-tokenizer and rewrites the text (see Encode).
  bool llama_non_legacy_ = false;
  std::optional<int32_t> bos_, eos_;
};

absl::Status HfTokenizer::ReadConfig(const json& config) {
  const std::string where = "tokenizer_config.json:";
  BS_ASSIGN_OR_RETURN(clean_up_, jf::OptBool(config, "clean_up_tokenization_spaces", where, true));
  BS_ASSIGN_OR_RETURN(const bool remove_space, jf::OptBool(config, "remove_space", where, false));
  if (remove_space) return jf::Unsupported(where, "remove_space", true, "false");
  BS_ASSIGN_OR_RETURN(const bool lower, jf::OptBool(config, "do_lowercase_and_remove_accent", where, false));
  if (lower) return jf::Unsupported(where, "do_lowercase_and_remove_accent", true, "false");
  BS_ASSIGN_OR_RETURN(std::string cls, jf::OptString(config, "tokenizer_class", where, ""));
  if (cls.size() > 4 && cls.compare(cls.size() - 4, 4, "Fast") == 0) cls.resize(cls.size() - 4);
  // Classes whose encoding or decoding transformers.js changes in ways not implemented here.
  if (cls == "MarianTokenizer" || cls == "VitsTokenizer") return jf::Unsupported(where, "tokenizer_class", cls, "others");
  if (config.contains("additional_special_tokens") && !config["additional_special_tokens"].is_null()) {
    const json& list = config["additional_special_tokens"];
    if (!list.is_array()) return jf::Unsupported(where, "additional_special_tokens", list, "an array of strings");
    for (const auto& s : list) {
      // transformers.js compares token strings with these; AddedToken objects never match.
      if (s.is_string()) special_strings_.insert(s.get<std::string>());
    }
  }
  for (auto [key, out] : {std::pair{"bos_token", &bos_}, std::pair{"eos_token", &eos_}}) {
    BS_ASSIGN_OR_RETURN(const std::string s, ConfigToken(config, key));
    const int32_t id = s.empty() ? -1 : model_->Lookup(s);
    if (id >= 0) *out = id;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Tokenizer>> HfTokenizer::Create(const json& tj, const json& config) {
  auto t = std::unique_ptr<HfTokenizer>(new HfTokenizer());
  if (!tj.contains("model")) return absl::InvalidArgumentError("tokenizer.json: \"model\" is missing");
  BS_ASSIGN_OR_RETURN(t->normalizer_, MakeNormalizer(tj.value("normalizer", json()), "tokenizer.json: normalizer"));
  BS_ASSIGN_OR_RETURN(t->pre_tokenizer_,
                      MakePreTokenizer(tj.value("pre_tokenizer", json()), "tokenizer.json: pre_tokenizer"));
  BS_ASSIGN_OR_RETURN(const std::string cls, jf::OptString(config, "tokenizer_class", "tokenizer_config.json:", ""));
  BS_ASSIGN_OR_RETURN(const bool legacy, jf::OptBool(config, "legacy", "tokenizer_config.json:", true));
  t->llama_non_legacy_ = (cls == "LlamaTokenizer" || cls == "LlamaTokenizerFast") && !legacy;
  if (t->llama_non_legacy_) {
    t->normalizer_ = nullptr;
    t->pre_tokenizer_ = MakeMetaspace(kSpiece, /*add_prefix_space=*/true, "first");
  }
  BS_ASSIGN_OR_RETURN(t->added_, AddedTokens::FromJson(tj.value("added_tokens", json()), t->normalizer_ != nullptr));
  std::vector<std::pair<int32_t, std::string>> added;
  for (const AddedToken& a : t->added_.tokens()) {
    added.emplace_back(a.id, a.content);
    if (a.special) t->special_strings_.insert(a.content);
  }
  BS_ASSIGN_OR_RETURN(t->model_, BpeModel::FromJson(tj["model"], added));
  BS_ASSIGN_OR_RETURN(t->decoder_, MakeDecoder(tj.value("decoder", json()), "tokenizer.json: decoder", &t->added_.contents()));
  BS_RETURN_IF_ERROR(t->ReadConfig(config));

  BS_ASSIGN_OR_RETURN(const SpecialTokenFrame frame,
                      ParsePostProcessor(tj.value("post_processor", json()), "tokenizer.json: post_processor"));
  for (auto [names, ids] : {std::pair{&frame.prefix, &t->prefix_ids_}, std::pair{&frame.suffix, &t->suffix_ids_}}) {
    for (const std::string& name : *names) {
      const int32_t id = t->model_->Lookup(name);
      if (id < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("tokenizer.json: post_processor token \"", name, "\" is not in the vocabulary"));
      }
      ids->push_back(id);
    }
  }
  t->special_by_id_.assign(t->model_->vocab_size(), false);
  for (int32_t id = 0; id < t->model_->vocab_size(); ++id) {
    const std::string* s = t->model_->token(id);
    t->special_by_id_[id] = s != nullptr && t->special_strings_.contains(*s);
  }
  return std::unique_ptr<Tokenizer>(std::move(t));
}

void HfTokenizer::EncodeSection(const AddedTokens::Section& section, bool first, std::vector<int32_t>* ids) const {
  if (section.text.empty()) return;
  if (section.id >= 0) {
    ids->push_back(section.id);
    return;
  }
  std::vector<std::string> words;
  words.push_back(normalizer_ ? normalizer_->Normalize(section.text) : section.text);
  if (words[0].empty()) return;
  if (pre_tokenizer_) words = pre_tokenizer_->Split(std::move(words), first);
  model_->EncodeWords(words, ids);
}

std::vector<int32_t> HfTokenizer::Encode(std::string_view raw, bool add_special_tokens) const {
  // Malformed UTF-8 reads as U+FFFD, one per maximal invalid subsequence: the text a JavaScript
  // caller would hold after TextDecoder.
  std::string text = unicode::SanitizeUtf8(raw);
  if (llama_non_legacy_ && !text.empty()) text = kSpiece + absl::StrReplaceAll(text, {{kSpiece, " "}});
  const auto sections = added_.Split(text);
  std::vector<int32_t> ids;
  if (add_special_tokens) ids = prefix_ids_;
  const size_t start = ids.size();
  for (size_t i = 0; i < sections.size(); ++i) EncodeSection(sections[i], i == 0, &ids);
  // LlamaTokenizer (legacy=false) drops the lone leading "▁" before a special token.
  if (llama_non_legacy_ && ids.size() > start + 1 && token_string(ids[start]) == kSpiece) {
    const std::string* next = model_->token(ids[start + 1]);
    if (next != nullptr && special_strings_.contains(*next)) ids.erase(ids.begin() + static_cast<ptrdiff_t>(start));
  }
  if (add_special_tokens) ids.insert(ids.end(), suffix_ids_.begin(), suffix_ids_.end());
  return ids;
}

std::string HfTokenizer::DecodeVerbatim(std::span<const int32_t> ids, bool skip_special) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    const std::string* s = model_->token(id);
    // transformers.js decodes an id without a token as the unknown token (or nothing).
    if (s == nullptr) s = model_->unk_token().empty() ? nullptr : &model_->unk_token();
    if (s == nullptr || (skip_special && special_strings_.contains(*s))) continue;
    tokens.push_back(*s);
  }
  if (!decoder_) {
    std::string text;
    for (size_t i = 0; i < tokens.size(); ++i) absl::StrAppend(&text, i ? " " : "", tokens[i]);
    return text;
  }
  std::string text;
  for (const auto& piece : decoder_->DecodeChain(std::move(tokens))) text += piece;
  return text;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::string& tokenizer_json_path,
                                                           const std::string& tokenizer_config_path) {
  BS_ASSIGN_OR_RETURN(const json tj, ReadJson(tokenizer_json_path, "tokenizer.json"));
  json config = json::object();
  if (!tokenizer_config_path.empty() && std::ifstream(tokenizer_config_path).good()) {
    BS_ASSIGN_OR_RETURN(config, ReadJson(tokenizer_config_path, "tokenizer_config.json"));
  }
  // The factories check types as they read; this is the backstop for anything they did not.
  try {
    return HfTokenizer::Create(tj, config);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: ", e.what()));
  }
}

}  // namespace brickserve
