// Which model a derived artefact (core map, module set) was computed for, so it is refused for any
// other checkpoint.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "engine/model/config.h"

namespace brickserve {

struct ModelIdentity {
  std::string architecture;  // config.json "architectures"[0]
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_layers = 0;
  // FNV-1a 64 (hex) of config.json and every RMSNorm weight: a few KB to read, and unlike config.json
  // alone it tells apart two checkpoints of one architecture (a fine-tune moves its norms).
  std::string fingerprint;

  bool operator==(const ModelIdentity&) const = default;
  std::string ToString() const;  // "LlamaForCausalLM, hidden 64, 3 layers, fingerprint 1a2b..."
};

absl::StatusOr<ModelIdentity> ComputeModelIdentity(const std::string& model_dir, const ModelConfig& config);

}  // namespace brickserve
