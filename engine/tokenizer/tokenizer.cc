// The tokenizer.json pipeline, with transformers.js semantics: split on added tokens, then per
// section normalizer -> pre-tokenizer -> BPE; post-processor for special tokens; decoder chain.
#include "engine/tokenizer/tokenizer.h"

#include <fstream>
#include <set>
#include <sstream>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "engine/tokenizer/bpe_model.h"
#include "engine/tokenizer/pipeline.h"
#include "engine/tokenizer/unicode_util.h"
#include "nlohmann/json.hpp"

namespace brickserve {
namespace {

using nlohmann::json;

struct AddedToken {
  std::string content;
  int32_t id = 0;
  bool special = false;
  bool lstrip = false;
  bool rstrip = false;
};

// Longest-match splitter over the added tokens (a byte trie; UTF-8 keeps matches aligned).
class AddedTokenSplitter {
 public:
  void Add(const std::string& word, int index) {
    int node = 0;
    for (unsigned char c : word) {
      auto it = nodes_[node].next.find(c);
      if (it == nodes_[node].next.end()) {
        nodes_[node].next[c] = static_cast<int>(nodes_.size());
        node = static_cast<int>(nodes_.size());
        nodes_.emplace_back();
      } else {
        node = it->second;
      }
    }
    nodes_[node].token = index;
  }
  // Pieces of `text`; `token_index` is -1 for plain text.
  std::vector<std::pair<std::string, int>> Split(std::string_view text) const {
    std::vector<std::pair<std::string, int>> out;
    size_t start = 0, i = 0;
    while (i < text.size()) {
      int node = 0, match = -1;
      size_t match_len = 0;
      for (size_t j = i; j < text.size(); ++j) {
        auto it = nodes_[node].next.find(static_cast<unsigned char>(text[j]));
        if (it == nodes_[node].next.end()) break;
        node = it->second;
        if (nodes_[node].token >= 0) {
          match = nodes_[node].token;
          match_len = j + 1 - i;
        }
      }
      if (match >= 0) {
        if (i > start) out.emplace_back(std::string(text.substr(start, i - start)), -1);
        out.emplace_back(std::string(text.substr(i, match_len)), match);
        i += match_len;
        start = i;
      } else {
        ++i;
      }
    }
    if (start < text.size()) out.emplace_back(std::string(text.substr(start)), -1);
    return out;
  }

 private:
  struct Node {
    std::unordered_map<unsigned char, int> next;
    int token = -1;
  };
  std::vector<Node> nodes_{1};
};

absl::StatusOr<json> ReadJson(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  json j = json::parse(ss.str(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
  return j;
}

// transformers.js clean_up_tokenization.
std::string CleanUpTokenization(const std::string& text) {
  return absl::StrReplaceAll(text, {{" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"}, {" n't", "n't"},
                                    {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}});
}

class HfTokenizer final : public Tokenizer {
 public:
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Create(const json& tj, const json& config);

  std::vector<int32_t> Encode(std::string_view text, bool add_special_tokens) const override;
  std::string Decode(std::span<const int32_t> ids, bool skip_special_tokens) const override {
    return DecodeImpl(ids, skip_special_tokens, clean_up_);
  }
  std::string DecodeVerbatim(std::span<const int32_t> ids, bool skip_special_tokens) const override {
    return DecodeImpl(ids, skip_special_tokens, false);
  }
  std::string DecodeImpl(std::span<const int32_t> ids, bool skip_special, bool clean_up) const;
  int32_t vocab_size() const override { return model_.vocab_size(); }
  std::optional<int32_t> bos_id() const override { return bos_; }
  std::optional<int32_t> eos_id() const override { return eos_; }
  bool is_special(int32_t id) const override { return special_ids_.count(id) > 0; }
  std::string_view token_string(int32_t id) const override {
    return id >= 0 && id < model_.vocab_size() ? std::string_view(model_.token(id)) : std::string_view();
  }
  std::optional<int32_t> token_id(std::string_view token) const override {
    const int32_t id = model_.Lookup(token);
    return id >= 0 ? std::optional<int32_t>(id) : std::nullopt;
  }

 private:
  explicit HfTokenizer(BpeModel model) : model_(std::move(model)) {}

  BpeModel model_;
  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<Decoder> decoder_;
  std::vector<AddedToken> added_;
  std::unordered_map<int32_t, size_t> added_by_id_;
  AddedTokenSplitter splitter_;
  std::set<int32_t> special_ids_;
  std::vector<int32_t> prefix_ids_, suffix_ids_;  // from the post-processor template
  bool clean_up_ = true;
  std::optional<int32_t> bos_, eos_;
};

// Collects the special tokens the post-processor adds around a single sequence.
absl::Status ParsePostProcessor(const json& pp, const BpeModel& model, std::vector<int32_t>* prefix,
                                std::vector<int32_t>* suffix) {
  if (pp.is_null()) return absl::OkStatus();
  const std::string type = pp.value("type", std::string());
  if (type == "ByteLevel") return absl::OkStatus();  // offsets only; no ids added
  if (type == "Sequence") {
    for (const auto& p : pp["processors"]) {
      if (auto s = ParsePostProcessor(p, model, prefix, suffix); !s.ok()) return s;
    }
    return absl::OkStatus();
  }
  if (type != "TemplateProcessing") {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: post_processor.type \"", type, "\" is not supported"));
  }
  bool seen_sequence = false;
  for (const auto& item : pp["single"]) {
    if (item.contains("Sequence")) {
      seen_sequence = true;
    } else if (item.contains("SpecialToken")) {
      const std::string name = item["SpecialToken"]["id"].get<std::string>();
      const int32_t id = model.Lookup(name);
      if (id < 0) return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: post_processor token \"", name, "\" is not in the vocabulary"));
      (seen_sequence ? suffix : prefix)->push_back(id);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Tokenizer>> HfTokenizer::Create(const json& tj, const json& config) {
  if (!tj.contains("model") || !tj["model"].is_object()) return absl::InvalidArgumentError("tokenizer.json: no \"model\" object");
  auto model = BpeModel::FromJson(tj["model"]);
  if (!model.ok()) return model.status();
  auto t = std::unique_ptr<HfTokenizer>(new HfTokenizer(*std::move(model)));
  auto norm = MakeNormalizer(tj.value("normalizer", json()));
  if (!norm.ok()) return norm.status();
  t->normalizer_ = std::move(*norm);
  auto pre = MakePreTokenizer(tj.value("pre_tokenizer", json()));
  if (!pre.ok()) return pre.status();
  t->pre_tokenizer_ = std::move(*pre);
  auto dec = MakeDecoder(tj.value("decoder", json()));
  if (!dec.ok()) return dec.status();
  t->decoder_ = std::move(*dec);

  if (tj.contains("added_tokens") && tj["added_tokens"].is_array()) {
    for (const auto& a : tj["added_tokens"]) {
      AddedToken tok;
      tok.content = a.value("content", std::string());
      tok.id = a.value("id", -1);
      tok.special = a.value("special", false);
      tok.lstrip = a.value("lstrip", false);
      tok.rstrip = a.value("rstrip", false);
      if (tok.content.empty() || tok.id < 0) return absl::InvalidArgumentError("tokenizer.json: added token without content or id");
      t->model_.AddToken(tok.id, tok.content);
      t->splitter_.Add(tok.content, static_cast<int>(t->added_.size()));
      t->added_by_id_[tok.id] = t->added_.size();
      if (tok.special) t->special_ids_.insert(tok.id);
      t->added_.push_back(std::move(tok));
    }
  }
  if (config.contains("additional_special_tokens") && config["additional_special_tokens"].is_array()) {
    for (const auto& s : config["additional_special_tokens"]) {
      if (!s.is_string()) continue;
      if (int32_t id = t->model_.Lookup(s.get<std::string>()); id >= 0) t->special_ids_.insert(id);
    }
  }
  if (auto s = ParsePostProcessor(tj.value("post_processor", json()), t->model_, &t->prefix_ids_, &t->suffix_ids_); !s.ok()) {
    return s;
  }
  t->clean_up_ = config.value("clean_up_tokenization_spaces", true);
  // bos_token / eos_token may be a string or {"content": ...}.
  auto token_field = [&](const char* field) -> std::optional<int32_t> {
    if (!config.contains(field)) return std::nullopt;
    const json& v = config[field];
    const std::string s = v.is_string() ? v.get<std::string>() : v.is_object() ? v.value("content", std::string()) : "";
    const int32_t id = s.empty() ? -1 : t->model_.Lookup(s);
    return id >= 0 ? std::optional<int32_t>(id) : std::nullopt;
  };
  t->bos_ = token_field("bos_token");
  t->eos_ = token_field("eos_token");
  return std::unique_ptr<Tokenizer>(std::move(t));
}

std::vector<int32_t> HfTokenizer::Encode(std::string_view raw, bool add_special_tokens) const {
  const std::string text = unicode::SanitizeUtf8(raw);  // malformed input: U+FFFD, as a JS string would hold
  auto sections = splitter_.Split(text);
  // lstrip/rstrip of added tokens trim the neighbouring text.
  for (size_t i = 0; i < sections.size(); ++i) {
    if (sections[i].second < 0) continue;
    const AddedToken& a = added_[sections[i].second];
    if (a.lstrip && i > 0) sections[i - 1].first = unicode::TrimJsWhitespace(sections[i - 1].first, false, true);
    if (a.rstrip && i + 1 < sections.size()) sections[i + 1].first = unicode::TrimJsWhitespace(sections[i + 1].first, true, false);
  }
  std::vector<int32_t> ids;
  if (add_special_tokens) ids = prefix_ids_;
  for (auto& [piece, index] : sections) {
    if (piece.empty()) continue;
    if (index >= 0) {
      ids.push_back(added_[index].id);
      continue;
    }
    std::string normalized = normalizer_ ? normalizer_->Normalize(std::move(piece)) : std::move(piece);
    if (normalized.empty()) continue;
    std::vector<std::string> words;
    words.push_back(std::move(normalized));
    if (pre_tokenizer_) words = pre_tokenizer_->Split(std::move(words));
    for (const auto& w : words) model_.Tokenize(w, &ids);
  }
  if (add_special_tokens) ids.insert(ids.end(), suffix_ids_.begin(), suffix_ids_.end());
  return ids;
}

std::string HfTokenizer::DecodeImpl(std::span<const int32_t> ids, bool skip_special, bool clean_up) const {
  std::vector<std::string> tokens;
  std::vector<bool> added;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    if (id < 0 || id >= model_.vocab_size()) continue;
    if (skip_special && special_ids_.count(id)) continue;
    tokens.push_back(model_.token(id));
    added.push_back(added_by_id_.count(id) > 0);
  }
  std::string text;
  if (decoder_) {
    for (const auto& piece : decoder_->DecodeChain(std::move(tokens), added)) text += piece;
  } else {
    for (size_t i = 0; i < tokens.size(); ++i) text += (i ? " " : "") + tokens[i];
  }
  return clean_up ? CleanUpTokenization(text) : text;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::string& tokenizer_json_path,
                                                           const std::string& tokenizer_config_path) {
  auto tj = ReadJson(tokenizer_json_path);
  if (!tj.ok()) return tj.status();
  json config = json::object();
  if (!tokenizer_config_path.empty()) {
    auto c = ReadJson(tokenizer_config_path);
    if (!c.ok()) return c.status();
    config = *std::move(c);
  }
  return HfTokenizer::Create(*tj, config);
}

}  // namespace brickserve
