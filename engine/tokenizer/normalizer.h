// tokenizer.json "normalizer": text -> text before pre-tokenization (per section between added
// tokens, as transformers.js applies it).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "nlohmann/json_fwd.hpp"

namespace brickserve {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual std::string Normalize(std::string text) const = 0;
};

// Supported: Sequence, Prepend, Replace (String pattern), NFC, NFD, NFKC, NFKD. Others are refused
// with an error naming the field and type. A null config yields nullptr (no normalizer).
absl::StatusOr<std::unique_ptr<Normalizer>> MakeNormalizer(const nlohmann::json& config, const std::string& where);

}  // namespace brickserve
