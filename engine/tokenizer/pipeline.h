// The text stages around the BPE model, configured from tokenizer.json: normalizers,
// pre-tokenizers and decoders. Each refuses configurations it does not implement.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json_fwd.hpp"

namespace brickserve {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual std::string Normalize(std::string text) const = 0;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Splits `text` into the words the BPE model sees (byte-level ones already byte-mapped).
  virtual std::vector<std::string> Split(std::vector<std::string> words) const = 0;
};

class Decoder {
 public:
  virtual ~Decoder() = default;
  // One step of the decoder chain over token strings; `added` marks added tokens.
  virtual std::vector<std::string> DecodeChain(std::vector<std::string> tokens, const std::vector<bool>& added) const = 0;
};

// A null JSON value yields nullptr (the stage is absent).
absl::StatusOr<std::unique_ptr<Normalizer>> MakeNormalizer(const nlohmann::json& config);
absl::StatusOr<std::unique_ptr<PreTokenizer>> MakePreTokenizer(const nlohmann::json& config);
absl::StatusOr<std::unique_ptr<Decoder>> MakeDecoder(const nlohmann::json& config);

}  // namespace brickserve
