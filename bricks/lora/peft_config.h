// adapter_config.json of a Hugging Face PEFT LoRA adapter: the fields that decide how the adapter
// is applied, and refusals (with the field named) for what brickserve does not apply.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace brickserve {

struct PeftLoraConfig {
  int r = 0;
  double lora_alpha = 0;
  bool use_rslora = false;
  std::vector<std::string> target_modules;  // empty when given as a regular expression
  std::map<std::string, int> rank_pattern;       // module name suffix -> rank
  std::map<std::string, double> alpha_pattern;   // module name suffix -> alpha
  std::string base_model_name_or_path;

  // The rank and alpha PEFT uses for `module` ("model.layers.0.self_attn.q_proj"): the longest
  // matching pattern key (PEFT matches keys as a suffix at a name boundary), else r / lora_alpha.
  int RankFor(const std::string& module) const;
  double AlphaFor(const std::string& module) const;
  // lora_alpha / r, or lora_alpha / sqrt(r) with rsLoRA.
  double ScaleFor(const std::string& module) const;
};

// Parses the JSON text of adapter_config.json (`path` is used in messages only).
absl::StatusOr<PeftLoraConfig> ParsePeftLoraConfig(const std::string& json_text, const std::string& path);

}  // namespace brickserve
