#include "engine/tokenizer/added_tokens.h"

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/json_fields.h"
#include "engine/tokenizer/unicode_util.h"
#include "engine/util/status_macros.h"
#include "nlohmann/json.hpp"

namespace brickserve {

using nlohmann::json;
namespace jf = json_fields;

absl::StatusOr<AddedTokens> AddedTokens::FromJson(const json& list, bool has_normalizer) {
  AddedTokens out;
  if (list.is_null()) return out;
  if (!list.is_array()) return absl::InvalidArgumentError("tokenizer.json: added_tokens must be an array");
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string where = jf::Path("tokenizer.json: added_tokens", i);
    const json& a = list[i];
    if (!a.is_object()) return absl::InvalidArgumentError(absl::StrCat(where, " must be an object"));
    AddedToken t;
    BS_ASSIGN_OR_RETURN(t.content, jf::String(a, "content", where));
    BS_ASSIGN_OR_RETURN(const int64_t id, jf::OptInt(a, "id", where, -1));
    if (t.content.empty() || id < 0 || id >= (1 << 24)) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": needs a non-empty content and an id in [0, 2^24)"));
    }
    t.id = static_cast<int32_t>(id);
    BS_ASSIGN_OR_RETURN(t.special, jf::OptBool(a, "special", where, false));
    BS_ASSIGN_OR_RETURN(t.lstrip, jf::OptBool(a, "lstrip", where, false));
    BS_ASSIGN_OR_RETURN(t.rstrip, jf::OptBool(a, "rstrip", where, false));
    BS_ASSIGN_OR_RETURN(const bool single_word, jf::OptBool(a, "single_word", where, false));
    BS_ASSIGN_OR_RETURN(const bool normalized, jf::OptBool(a, "normalized", where, false));
    if (single_word) {
      return absl::InvalidArgumentError(absl::StrCat(where, " \"", t.content, "\": single_word=true is not supported"));
    }
    if (normalized && has_normalizer) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, " \"", t.content, "\": normalized=true with a normalizer is not supported"));
    }
    const auto index = static_cast<int32_t>(out.tokens_.size());
    out.Insert(t.content, index);
    out.by_content_[t.content] = index;
    out.contents_.insert(t.content);
    out.tokens_.push_back(std::move(t));
  }
  return out;
}

void AddedTokens::Insert(const std::string& content, int32_t index) {
  int32_t node = 0;
  for (unsigned char c : content) {
    auto it = trie_[node].next.find(c);
    if (it != trie_[node].next.end()) {
      node = it->second;
      continue;
    }
    const auto child = static_cast<int32_t>(trie_.size());
    trie_[node].next[c] = child;
    trie_.emplace_back();
    node = child;
  }
  trie_[node].token = index;
}

std::vector<AddedTokens::Section> AddedTokens::Split(std::string_view text) const {
  // DictionarySplitter.split: at each position the longest token starting there, else move on.
  // (transformers.js walks UTF-16 units, this UTF-8 bytes: for well-formed text the same matches.)
  std::vector<std::string> pieces;
  size_t start = 0, i = 0;
  while (i < text.size() && !tokens_.empty()) {
    int32_t node = 0;
    size_t match_len = 0;
    for (size_t j = i; j < text.size(); ++j) {
      auto it = trie_[node].next.find(static_cast<unsigned char>(text[j]));
      if (it == trie_[node].next.end()) break;
      node = it->second;
      if (trie_[node].token >= 0) match_len = j + 1 - i;
    }
    if (match_len == 0) {
      ++i;
      continue;
    }
    if (i > start) pieces.emplace_back(text.substr(start, i - start));
    pieces.emplace_back(text.substr(i, match_len));
    i += match_len;
    start = i;
  }
  if (start < text.size()) pieces.emplace_back(text.substr(start));

  // lstrip/rstrip trim whichever section is next to the token (JavaScript trimEnd/trimStart),
  // judged on the sections as they stand, as transformers.js does.
  for (size_t k = 0; k < pieces.size(); ++k) {
    auto it = by_content_.find(pieces[k]);
    if (it == by_content_.end()) continue;
    const AddedToken& t = tokens_[it->second];
    if (t.lstrip && k > 0) pieces[k - 1] = unicode::TrimJsWhitespace(pieces[k - 1], false, true);
    if (t.rstrip && k + 1 < pieces.size()) pieces[k + 1] = unicode::TrimJsWhitespace(pieces[k + 1], true, false);
  }
  // A section is an added token when its (possibly trimmed) text is one, as in transformers.js.
  std::vector<Section> sections(pieces.size());
  for (size_t k = 0; k < pieces.size(); ++k) {
    auto it = by_content_.find(pieces[k]);
    sections[k].id = it == by_content_.end() ? -1 : tokens_[it->second].id;
    sections[k].text = std::move(pieces[k]);
  }
  return sections;
}

}  // namespace brickserve
