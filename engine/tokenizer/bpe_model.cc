#include "engine/tokenizer/bpe_model.h"

#include <queue>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/tokenizer/unicode_util.h"
#include "nlohmann/json.hpp"

namespace brickserve {

using nlohmann::json;

absl::StatusOr<BpeModel> BpeModel::FromJson(const json& model) {
  BpeModel m;
  const std::string type = model.value("type", std::string("BPE"));
  if (type != "BPE") {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer.json: model.type \"", type, "\" is not supported (supported: BPE)"));
  }
  for (const char* field : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.contains(field) && model[field].is_string() && !model[field].get<std::string>().empty()) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: model.", field, " \"",
                                                     model[field].get<std::string>(), "\" is not supported"));
    }
  }
  if (model.contains("dropout") && model["dropout"].is_number() && model["dropout"].get<double>() > 0) {
    return absl::InvalidArgumentError("tokenizer.json: model.dropout > 0 is not supported (inference is deterministic)");
  }
  if (!model.contains("vocab") || !model["vocab"].is_object()) {
    return absl::InvalidArgumentError("tokenizer.json: model.vocab must be an object of token -> id");
  }
  int32_t max_id = -1;
  for (const auto& [tok, id] : model["vocab"].items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > (1 << 24)) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: model.vocab[\"", tok, "\"] is not a valid id"));
    }
    m.token_to_id_[tok] = id.get<int32_t>();
    max_id = std::max(max_id, id.get<int32_t>());
  }
  m.id_to_token_.resize(max_id + 1);
  for (const auto& [tok, id] : m.token_to_id_) m.id_to_token_[id] = tok;

  if (!model.contains("merges") || !model["merges"].is_array()) {
    return absl::InvalidArgumentError("tokenizer.json: model.merges must be an array");
  }
  int32_t rank = 0;
  for (const auto& entry : model["merges"]) {
    std::string a, b;
    if (entry.is_string()) {  // "a b" (tokenizers < 0.20)
      const std::string s = entry.get<std::string>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: merge \"", s, "\" is not \"a b\""));
      }
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (entry.is_array() && entry.size() == 2 && entry[0].is_string() && entry[1].is_string()) {
      a = entry[0].get<std::string>();
      b = entry[1].get<std::string>();
    } else {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: merge #", rank, " is malformed"));
    }
    const int32_t ia = m.Lookup(a), ib = m.Lookup(b), im = m.Lookup(a + b);
    // A merge whose parts or result are not tokens can never fire on vocabulary symbols.
    if (ia >= 0 && ib >= 0 && im >= 0) m.merges_.emplace(PairKey(ia, ib), Merge{rank, im});
    ++rank;
  }
  if (model.contains("unk_token") && model["unk_token"].is_string()) {
    m.unk_id_ = m.Lookup(model["unk_token"].get<std::string>());
  }
  m.byte_fallback_ = model.value("byte_fallback", false);
  m.ignore_merges_ = model.value("ignore_merges", false);
  for (int b = 0; b < 256; ++b) m.byte_ids_[b] = m.Lookup(absl::StrFormat("<0x%02X>", b));
  return m;
}

int32_t BpeModel::Lookup(std::string_view token) const {
  auto it = token_to_id_.find(std::string(token));
  return it == token_to_id_.end() ? -1 : it->second;
}

void BpeModel::AddToken(int32_t id, const std::string& content) {
  if (id >= static_cast<int32_t>(id_to_token_.size())) id_to_token_.resize(id + 1);
  id_to_token_[id] = content;
  token_to_id_[content] = id;
}

void BpeModel::Fallback(std::string_view piece, std::vector<int32_t>* ids) const {
  if (byte_fallback_) {
    bool all = true;
    for (unsigned char c : piece) all = all && byte_ids_[c] >= 0;
    if (all) {
      for (unsigned char c : piece) ids->push_back(byte_ids_[c]);
      return;
    }
  }
  if (unk_id_ >= 0) ids->push_back(unk_id_);
}

void BpeModel::Tokenize(std::string_view word, std::vector<int32_t>* ids) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (int32_t id = Lookup(word); id >= 0) {
      ids->push_back(id);
      return;
    }
  }
  // Symbols are code points; a doubly linked list with lazy deletion in the merge queue.
  const auto chars = unicode::SplitCodePoints(word);
  const int n = static_cast<int>(chars.size());
  std::vector<int32_t> sym(n);
  std::vector<int> prev(n), next(n);
  std::vector<std::string_view> text(chars.begin(), chars.end());
  for (int i = 0; i < n; ++i) {
    sym[i] = Lookup(chars[i]);
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  struct Candidate {
    int32_t rank;
    int left;  // also the original position of the left symbol: ties go leftmost
    int32_t left_id, right_id;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  auto push = [&](int i) {
    const int j = next[i];
    if (j < 0 || sym[i] < 0 || sym[j] < 0) return;
    auto it = merges_.find(PairKey(sym[i], sym[j]));
    if (it != merges_.end()) queue.push({it->second.rank, i, sym[i], sym[j]});
  };
  for (int i = 0; i + 1 < n; ++i) push(i);
  std::vector<bool> alive(n, true);
  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    const int i = c.left, j = next[i];
    if (!alive[i] || j < 0 || sym[i] != c.left_id || sym[j] != c.right_id) continue;  // stale
    sym[i] = merges_.at(PairKey(c.left_id, c.right_id)).merged_id;
    text[i] = std::string_view(text[i].data(), text[i].size() + text[j].size());
    alive[j] = false;
    next[i] = next[j];
    if (next[j] >= 0) prev[next[j]] = i;
    if (prev[i] >= 0) push(prev[i]);
    push(i);
  }
  for (int i = 0; i >= 0; i = next[i]) {
    if (sym[i] >= 0) {
      ids->push_back(sym[i]);
    } else {
      Fallback(text[i], ids);
    }
  }
}

}  // namespace brickserve
