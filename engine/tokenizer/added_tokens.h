// tokenizer.json "added_tokens": tokens matched in the raw text before anything else, like
// transformers.js: leftmost-longest match, then lstrip/rstrip trim the neighbouring text.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "nlohmann/json_fwd.hpp"

namespace brickserve {

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = false;
  bool lstrip = false;  // trims whitespace at the end of the text before it
  bool rstrip = false;  // trims whitespace at the start of the text after it
};

class AddedTokens {
 public:
  // `has_normalizer`: tokens with normalized=true are refused when a normalizer exists, since HF
  // tokenizers then matches them in normalized text and transformers.js in raw text;
  // single_word=true is refused likewise (transformers.js ignores it).
  static absl::StatusOr<AddedTokens> FromJson(const nlohmann::json& list, bool has_normalizer);

  struct Section {
    std::string text;
    int32_t id = -1;  // >= 0: the section is this added token
  };
  // The text cut into plain sections and added tokens, in order; sections left empty by
  // stripping are kept (their position matters to Metaspace's prepend_scheme "first").
  std::vector<Section> Split(std::string_view text) const;

  const std::vector<AddedToken>& tokens() const { return tokens_; }
  // The contents of all added tokens (the ByteLevel decoder passes them verbatim).
  const absl::flat_hash_set<std::string>& contents() const { return contents_; }

 private:
  struct TrieNode {
    absl::flat_hash_map<unsigned char, int32_t> next;
    int32_t token = -1;  // index into tokens_ of the token ending here
  };
  void Insert(const std::string& content, int32_t index);

  std::vector<AddedToken> tokens_;
  absl::flat_hash_map<std::string, int32_t> by_content_;  // content -> index; the last one wins
  absl::flat_hash_set<std::string> contents_;
  std::vector<TrieNode> trie_{1};
};

}  // namespace brickserve
