// A LoRA brick: a Hugging Face PEFT adapter directory (adapter_config.json +
// adapter_model.safetensors) bound to the device and applied unmerged by the forward pass.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "bricks/brick.h"
#include "engine/model/lora.h"

namespace brickserve {

class LoraBrick final : public Brick {
 public:
  // Loads and validates the adapter in `dir` against `base`. `sha256` is the weights file's digest
  // (the caller computed it, and checked it against an expected one).
  // Errors: INVALID_ARGUMENT for an unreadable, truncated or unsupported adapter (naming the file or
  // field), FAILED_PRECONDITION for one that does not fit the base model (naming the tensor and both
  // shapes).
  static absl::StatusOr<std::shared_ptr<LoraBrick>> Load(const std::string& dir, const BaseModel& base,
                                                         std::string sha256);

  BrickKind kind() const override { return BrickKind::kLora; }
  const std::string& version() const override { return version_; }
  const std::string& sha256() const override { return sha256_; }
  size_t size_bytes() const override { return adapter_.bytes; }
  const std::string& base_model() const override { return base_model_; }
  std::vector<std::string> plugs_into() const override { return targets_; }
  absl::Status Validate(const ModelConfig& base) const override;
  absl::Status Apply(float weight, GenerationRequest& request) const override;

  const LoraAdapter& adapter() const { return adapter_; }

 private:
  LoraBrick() = default;
  LoraAdapter adapter_;
  std::string sha256_, version_, base_model_;
  std::vector<std::string> targets_;
};

// PEFT's name of a LoRA tensor: "base_model.model.model.layers.{layer}.self_attn.q_proj.lora_A.weight".
std::string PeftLoraTensorName(int layer, LoraTarget t, char a_or_b);

}  // namespace brickserve
