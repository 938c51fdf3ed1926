#include "engine/tokenizer/bpe_model.h"

#include <algorithm>
#include <queue>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/tokenizer/json_fields.h"
#include "engine/tokenizer/unicode_util.h"
#include "engine/util/status_macros.h"
#include "nlohmann/json.hpp"

namespace brickserve {
namespace {

using nlohmann::json;
namespace jf = json_fields;

constexpr char kWhere[] = "tokenizer.json: model";
// Words longer than this (in code points) are first cut where no merge can cross.
constexpr size_t kLongWord = 128;
constexpr int32_t kMaxId = 1 << 24;

uint64_t CodePointPair(uint32_t a, uint32_t b) { return (static_cast<uint64_t>(a) << 21) | b; }

// Heterogeneous lookups in absl containers take absl::string_view (a distinct type in Debian's absl).
absl::string_view Key(std::string_view s) { return absl::string_view(s.data(), s.size()); }

}  // namespace

absl::StatusOr<std::unique_ptr<BpeModel>> BpeModel::FromJson(
    const json& model, const std::vector<std::pair<int32_t, std::string>>& added_tokens) {
  if (!model.is_object()) return absl::InvalidArgumentError("tokenizer.json: \"model\" must be an object");
  auto m = std::unique_ptr<BpeModel>(new BpeModel());
  // Files from old tokenizers versions have no type; a vocab + merges object is BPE.
  BS_ASSIGN_OR_RETURN(const std::string type, jf::OptString(model, "type", kWhere, "BPE"));
  if (type != "BPE") return jf::Unsupported(kWhere, "type", type, "BPE");
  for (const char* field : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    BS_ASSIGN_OR_RETURN(const std::string value, jf::OptString(model, field, kWhere, ""));
    if (!value.empty()) return jf::Unsupported(kWhere, field, value, "null or \"\"");
  }
  if (model.contains("dropout") && !model["dropout"].is_null() &&
      !(model["dropout"].is_number() && model["dropout"].get<double>() == 0.0)) {
    return jf::Unsupported(kWhere, "dropout", model["dropout"], "null; inference is deterministic");
  }
  BS_ASSIGN_OR_RETURN(m->byte_fallback_, jf::OptBool(model, "byte_fallback", kWhere, false));
  BS_ASSIGN_OR_RETURN(m->fuse_unk_, jf::OptBool(model, "fuse_unk", kWhere, false));
  BS_ASSIGN_OR_RETURN(m->ignore_merges_, jf::OptBool(model, "ignore_merges", kWhere, false));
  BS_ASSIGN_OR_RETURN(m->unk_token_, jf::OptString(model, "unk_token", kWhere, ""));
  if (!model.contains("vocab") || !model["vocab"].is_object()) {
    return absl::InvalidArgumentError("tokenizer.json: model.vocab must be an object of token -> id");
  }
  BS_RETURN_IF_ERROR(m->LoadVocab(model["vocab"]));
  BS_ASSIGN_OR_RETURN(const json* merges, jf::Array(model, "merges", kWhere));
  BS_RETURN_IF_ERROR(m->LoadMerges(*merges));

  for (const auto& [id, content] : added_tokens) {
    if (id < 0 || id >= kMaxId) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: added token \"", content, "\" has id ", id));
    }
    if (id >= m->vocab_size()) {
      m->id_to_token_.resize(id + 1);
      m->has_token_.resize(id + 1, false);
    }
    m->id_to_token_[id] = content;
    m->has_token_[id] = true;
    m->token_to_id_[content] = id;
  }
  // What a symbol emits follows the final content -> id map (added tokens included).
  m->symbol_token_ids_.assign(m->symbols_.size(), -1);
  for (size_t s = 0; s < m->symbols_.size(); ++s) m->symbol_token_ids_[s] = m->Lookup(m->symbols_[s]);
  for (int c = 0; c < 128; ++c) {
    auto it = m->symbol_ids_.find(std::string(1, static_cast<char>(c)));
    m->ascii_symbols_[c] = it == m->symbol_ids_.end() ? -1 : it->second;
  }
  for (int b = 0; b < 256; ++b) m->byte_ids_[b] = m->Lookup(absl::StrFormat("<0x%02X>", b));
  m->unk_id_ = m->unk_token_.empty() ? -1 : m->Lookup(m->unk_token_);
  return m;
}

absl::Status BpeModel::LoadVocab(const json& vocab) {
  int32_t max_id = -1;
  token_to_id_.reserve(vocab.size());
  for (const auto& [tok, id] : vocab.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= kMaxId) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: model.vocab[\"", tok, "\"] = ", id.dump(),
                                                     " is not a valid id"));
    }
    token_to_id_[tok] = id.get<int32_t>();
    max_id = std::max(max_id, id.get<int32_t>());
  }
  id_to_token_.assign(max_id + 1, std::string());
  has_token_.assign(max_id + 1, false);
  // In key order (nlohmann sorts keys), so that an id given to two tokens resolves the same every run.
  for (const auto& [tok, id] : vocab.items()) {
    id_to_token_[id.get<int32_t>()] = tok;
    has_token_[id.get<int32_t>()] = true;
  }
  symbols_.reserve(vocab.size());
  for (const auto& [tok, id] : vocab.items()) InternSymbol(tok);
  return absl::OkStatus();
}

absl::Status BpeModel::LoadMerges(const json& merges) {
  merges_.reserve(merges.size());
  int32_t rank = 0;
  for (const auto& entry : merges) {
    std::string a, b;
    if (entry.is_string()) {  // "a b" (tokenizers < 0.20)
      const std::string s = entry.get<std::string>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || sp == 0 || sp + 1 == s.size() || s.find(' ', sp + 1) != std::string::npos) {
        return absl::InvalidArgumentError(
            absl::StrCat("tokenizer.json: model.merges[", rank, "] \"", s, "\" is not two space-separated tokens"));
      }
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (entry.is_array() && entry.size() == 2 && entry[0].is_string() && entry[1].is_string()) {
      a = entry[0].get<std::string>();
      b = entry[1].get<std::string>();
    } else {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: model.merges[", rank, "] = ",
                                                     entry.dump().substr(0, 80), " is not a pair of tokens"));
    }
    const int32_t ia = InternSymbol(a), ib = InternSymbol(b), result = InternSymbol(a + b);
    merges_[PairKey(ia, ib)] = Merge{rank, result};  // a repeated pair keeps its last rank, as in transformers.js
    ++rank;
  }
  return absl::OkStatus();
}

int32_t BpeModel::InternSymbol(std::string_view text) {
  auto [it, inserted] = symbol_ids_.try_emplace(std::string(text), static_cast<int32_t>(symbols_.size()));
  if (inserted) symbols_.emplace_back(text);
  return it->second;
}

int32_t BpeModel::Symbol(std::string_view text) const {
  if (text.size() == 1 && static_cast<unsigned char>(text[0]) < 128) return ascii_symbols_[static_cast<int>(text[0])];
  auto it = symbol_ids_.find(Key(text));
  return it == symbol_ids_.end() ? -1 : it->second;
}

int32_t BpeModel::Lookup(std::string_view token) const {
  auto it = token_to_id_.find(Key(token));
  return it == token_to_id_.end() ? -1 : it->second;
}

const std::string* BpeModel::token(int32_t id) const {
  return id >= 0 && id < vocab_size() && has_token_[id] ? &id_to_token_[id] : nullptr;
}

void BpeModel::EncodeWords(const std::vector<std::string>& words, std::vector<int32_t>* ids) const {
  bool prev_unk = false;
  for (const auto& w : words) EncodeWord(w, ids, &prev_unk);
}

void BpeModel::EncodeWord(std::string_view word, std::vector<int32_t>* ids, bool* prev_unk) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (int32_t id = Lookup(word); id >= 0) {
      *prev_unk = false;
      ids->push_back(id);
      return;
    }
  }
  std::vector<Piece> pieces;
  if (word.size() > kLongWord) {
    for (std::string_view part : SplitIndependent(word)) MergeWord(part, &pieces);
  } else {
    MergeWord(word, &pieces);
  }
  for (const Piece& p : pieces) AppendPiece(p, ids, prev_unk);
}

void BpeModel::AppendPiece(const Piece& piece, std::vector<int32_t>* ids, bool* prev_unk) const {
  const int32_t id = piece.symbol >= 0 ? symbol_token_ids_[piece.symbol] : -1;
  if (id >= 0) {
    ids->push_back(id);
    *prev_unk = false;
    return;
  }
  if (byte_fallback_ &&
      std::all_of(piece.text.begin(), piece.text.end(), [&](char c) { return byte_ids_[static_cast<uint8_t>(c)] >= 0; })) {
    for (char c : piece.text) ids->push_back(byte_ids_[static_cast<uint8_t>(c)]);
    *prev_unk = false;
    return;
  }
  // Without an unknown token transformers.js would yield an undefined id; the piece is dropped.
  if (unk_id_ < 0 || (fuse_unk_ && *prev_unk)) return;
  ids->push_back(unk_id_);
  *prev_unk = true;
}

void BpeModel::MergeWord(std::string_view word, std::vector<Piece>* pieces) const {
  // Symbols are the word's characters; a doubly linked list, with lazy deletion in the queue.
  std::vector<int32_t> sym, next, prev;
  std::vector<uint32_t> begin;  // byte offset of each symbol; its end is the next live one's begin
  for (size_t pos = 0; pos < word.size();) {
    const size_t start = pos;
    unicode::NextCodePoint(word, &pos);
    begin.push_back(static_cast<uint32_t>(start));
    sym.push_back(Symbol(word.substr(start, pos - start)));
  }
  const int n = static_cast<int>(sym.size());
  if (n == 1) {
    pieces->push_back({sym[0], word});
    return;
  }
  next.resize(n);
  prev.resize(n);
  for (int i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  struct Candidate {
    int32_t rank;
    int32_t left;  // the left symbol's first character: ties go to the leftmost pair
    int32_t left_sym, right_sym, result;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
  };
  std::vector<Candidate> storage;
  storage.reserve(n);
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue(std::greater<>(), std::move(storage));
  auto push = [&](int i) {
    const int j = next[i];
    if (j < 0 || sym[i] < 0 || sym[j] < 0) return;
    auto it = merges_.find(PairKey(sym[i], sym[j]));
    if (it != merges_.end()) queue.push({it->second.rank, i, sym[i], sym[j], it->second.result});
  };
  for (int i = 0; i + 1 < n; ++i) push(i);
  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    const int i = c.left, j = next[i];
    // Stale unless both symbols are unchanged: a merge always changes the left one's symbol.
    if (j < 0 || sym[i] != c.left_sym || sym[j] != c.right_sym) continue;
    sym[i] = c.result;
    sym[j] = -2;  // dead
    next[i] = next[j];
    if (next[j] >= 0) prev[next[j]] = i;
    if (prev[i] >= 0) push(prev[i]);
    push(i);
  }
  for (int i = 0; i >= 0; i = next[i]) {
    const uint32_t end = next[i] >= 0 ? begin[next[i]] : static_cast<uint32_t>(word.size());
    pieces->push_back({sym[i], word.substr(begin[i], end - begin[i])});
  }
}

std::vector<std::string_view> BpeModel::SplitIndependent(std::string_view word) const {
  // A merge joining the symbols on either side of a character boundary creates a string with
  // that boundary's two characters adjacent; if no merge result has them adjacent, the two sides
  // never interact, and merging each side alone gives the same pieces.
  std::call_once(inner_pairs_once_, [this] {
    for (const auto& [key, merge] : merges_) {
      const std::string& s = symbols_[merge.result];
      size_t pos = 0;
      uint32_t last = unicode::NextCodePoint(s, &pos);
      while (pos < s.size()) {
        const uint32_t cp = unicode::NextCodePoint(s, &pos);
        inner_pairs_.insert(CodePointPair(last, cp));
        last = cp;
      }
    }
  });
  std::vector<std::string_view> parts;
  size_t start = 0, pos = 0;
  uint32_t last = unicode::NextCodePoint(word, &pos);
  while (pos < word.size()) {
    const size_t boundary = pos;
    const uint32_t cp = unicode::NextCodePoint(word, &pos);
    if (!inner_pairs_.contains(CodePointPair(last, cp))) {
      parts.push_back(word.substr(start, boundary - start));
      start = boundary;
    }
    last = cp;
  }
  parts.push_back(word.substr(start));
  return parts;
}

}  // namespace brickserve
