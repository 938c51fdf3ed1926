// The BPE model of tokenizer.json: vocabulary, ranked merges, byte fallback, unknown token.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json_fwd.hpp"

namespace brickserve {

class BpeModel {
 public:
  // `model` is tokenizer.json's "model" object.
  static absl::StatusOr<BpeModel> FromJson(const nlohmann::json& model);

  // Appends the ids of one pre-tokenized word. Merges follow transformers.js: lowest rank first,
  // ties to the leftmost pair; pieces outside the vocabulary become <0xXX> byte tokens when
  // byte_fallback is on, else the unknown token.
  void Tokenize(std::string_view word, std::vector<int32_t>* ids) const;

  int32_t vocab_size() const { return static_cast<int32_t>(id_to_token_.size()); }
  const std::string& token(int32_t id) const { return id_to_token_[id]; }
  // -1 when absent.
  int32_t Lookup(std::string_view token) const;
  // Registers an added token's id and text (they may lie beyond the model's vocabulary).
  void AddToken(int32_t id, const std::string& content);

 private:
  struct Merge {
    int32_t rank;
    int32_t merged_id;
  };
  static uint64_t PairKey(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  void Fallback(std::string_view piece, std::vector<int32_t>* ids) const;

  std::unordered_map<std::string, int32_t> token_to_id_;
  std::vector<std::string> id_to_token_;
  std::unordered_map<uint64_t, Merge> merges_;
  int32_t unk_id_ = -1;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  int32_t byte_ids_[256];
};

}  // namespace brickserve
