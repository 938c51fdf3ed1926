// The BPE model of tokenizer.json: vocabulary, ranked merges, byte fallback, unknown token.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "nlohmann/json_fwd.hpp"

namespace brickserve {

class BpeModel {
 public:
  // `model` is tokenizer.json's "model" object; `added_tokens` (id, content) join the vocabulary
  // and override entries with the same id or content, as in transformers.js.
  static absl::StatusOr<std::unique_ptr<BpeModel>> FromJson(
      const nlohmann::json& model, const std::vector<std::pair<int32_t, std::string>>& added_tokens);

  // Words of one pre-tokenized section -> ids, with transformers.js semantics: per word, merges
  // apply lowest rank first, ties to the leftmost pair; a result outside the vocabulary becomes
  // <0xXX> byte tokens (byte_fallback, when all exist) or the unknown token; with fuse_unk,
  // consecutive unknown tokens of the section collapse into one. Words must be valid UTF-8.
  void EncodeWords(const std::vector<std::string>& words, std::vector<int32_t>* ids) const;

  // One more than the largest id (vocabulary and added tokens).
  int32_t vocab_size() const { return static_cast<int32_t>(id_to_token_.size()); }
  // The token string of `id`, or nullptr for an id with no token.
  const std::string* token(int32_t id) const;
  // -1 when absent.
  int32_t Lookup(std::string_view token) const;
  // The unknown token's string, empty when the model has none.
  const std::string& unk_token() const { return unk_token_; }

 private:
  struct Merge {
    int32_t rank;
    int32_t result;  // a symbol
  };
  struct Piece {
    int32_t symbol;  // -1: a character no merge or token knows
    std::string_view text;
  };

  BpeModel() = default;
  static uint64_t PairKey(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  absl::Status LoadVocab(const nlohmann::json& vocab);
  absl::Status LoadMerges(const nlohmann::json& merges);
  int32_t Symbol(std::string_view text) const;
  int32_t InternSymbol(std::string_view text);
  void EncodeWord(std::string_view word, std::vector<int32_t>* ids, bool* prev_unk) const;
  // Appends the pieces BPE makes of `word`.
  void MergeWord(std::string_view word, std::vector<Piece>* pieces) const;
  // Splits a long word where no merge can ever cross, so that the parts merge independently
  // (same result, much smaller merge queues).
  std::vector<std::string_view> SplitIndependent(std::string_view word) const;
  void AppendPiece(const Piece& piece, std::vector<int32_t>* ids, bool* prev_unk) const;

  absl::flat_hash_map<std::string, int32_t> token_to_id_;
  std::vector<std::string> id_to_token_;
  std::vector<bool> has_token_;
  // Symbols are the strings BPE works on: vocabulary tokens, characters and merge operands and
  // results, whether or not they are in the vocabulary (transformers.js merges strings).
  absl::flat_hash_map<std::string, int32_t> symbol_ids_;
  std::vector<std::string> symbols_;
  std::vector<int32_t> symbol_token_ids_;  // symbol -> token id, -1 if not in the vocabulary
  absl::flat_hash_map<uint64_t, Merge> merges_;
  int32_t ascii_symbols_[128];
  int32_t byte_ids_[256];
  std::string unk_token_;
  int32_t unk_id_ = -1;
  bool byte_fallback_ = false;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
  // Adjacent code point pairs inside some merge result; built on the first long word.
  mutable std::once_flag inner_pairs_once_;
  mutable absl::flat_hash_set<uint64_t> inner_pairs_;
};

}  // namespace brickserve
