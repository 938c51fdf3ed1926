// The model's hyper-parameters, read from Hugging Face config.json (+ generation_config.json).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace brickserve {

enum class Architecture { kLlama, kMistral, kQwen2 };

struct RopeScaling {
  enum class Type { kNone, kLinear, kLlama3 };
  Type type = Type::kNone;
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct ModelConfig {
  Architecture architecture = Architecture::kLlama;
  std::string architecture_name;  // as written in config.json
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int vocab_size = 0;
  int max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;  // Qwen2 always; Llama when attention_bias is true
  int sliding_window = 0;  // 0 = full attention
  std::vector<int32_t> bos_token_ids;
  std::vector<int32_t> eos_token_ids;  // from generation_config.json when present, else config.json

  // The longest context the engine serves for this model.
  int max_context() const {
    return sliding_window > 0 && sliding_window < max_position_embeddings ? sliding_window
                                                                          : max_position_embeddings;
  }
  // Inverse RoPE frequencies (head_dim / 2 values), with the configured scaling applied.
  std::vector<float> RopeInvFreq() const;
};

// Parses config.json text; `generation_config_json` may be empty. Errors name the field and value.
absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& config_json,
                                             const std::string& generation_config_json);

// Reads `<dir>/config.json` and, when present, `<dir>/generation_config.json`.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir);

}  // namespace brickserve
