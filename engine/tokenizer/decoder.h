// tokenizer.json "decoder": token strings -> text, as a chain of steps over the token list
// (transformers.js decode_chain).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "nlohmann/json_fwd.hpp"

namespace brickserve {

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual std::vector<std::string> DecodeChain(std::vector<std::string> tokens) const = 0;
};

// Supported: Sequence, Replace (String pattern), ByteFallback, Fuse, Strip, ByteLevel, Metaspace.
// Others are refused. Null yields nullptr. `added_contents` are the added tokens' strings, which a
// top-level ByteLevel decoder passes through verbatim (transformers.js gives them to the top-level
// decoder only); the set must outlive the decoder.
absl::StatusOr<std::unique_ptr<Decoder>> MakeDecoder(const nlohmann::json& config, const std::string& where,
                                                     const absl::flat_hash_set<std::string>* added_contents);

}  // namespace brickserve
