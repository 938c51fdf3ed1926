#include "bricks/lora/peft_config.h"

#include <cmath>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace brickserve {

namespace {

// The pattern key matching `module`: equal to it or a suffix after a '.', the longest one.
template <typename Map>
const typename Map::mapped_type* MatchPattern(const Map& patterns, const std::string& module) {
  const typename Map::mapped_type* best = nullptr;
  size_t best_len = 0;
  for (const auto& [key, value] : patterns) {
    const bool match = module == key || absl::EndsWith(module, "." + key);
    if (match && key.size() >= best_len) {
      best = &value;
      best_len = key.size();
    }
  }
  return best;
}

}  // namespace

int PeftLoraConfig::RankFor(const std::string& module) const {
  const int* p = MatchPattern(rank_pattern, module);
  return p != nullptr ? *p : r;
}

double PeftLoraConfig::AlphaFor(const std::string& module) const {
  const double* p = MatchPattern(alpha_pattern, module);
  return p != nullptr ? *p : lora_alpha;
}

double PeftLoraConfig::ScaleFor(const std::string& module) const {
  const double rank = RankFor(module);
  return AlphaFor(module) / (use_rslora ? std::sqrt(rank) : rank);
}

absl::StatusOr<PeftLoraConfig> ParsePeftLoraConfig(const std::string& json_text, const std::string& path) {
  const auto bad = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", what));
  };
  nlohmann::json j = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return bad("not a JSON object");
  PeftLoraConfig c;
  // Reads a string field; absent or not a string reads as "" (no nlohmann exceptions escape).
  const auto string_field = [&](const char* key) {
    return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : std::string();
  };
  const std::string peft_type = string_field("peft_type");
  if (peft_type != "LORA") {
    return bad(absl::StrCat("peft_type = \"", peft_type, "\": only LORA adapters are LoRA bricks"));
  }
  if (!j.contains("r") || !j["r"].is_number_integer() || j["r"].get<int64_t>() < 1 || j["r"].get<int64_t>() > 256) {
    return bad("r must be an integer in [1, 256]");
  }
  c.r = j["r"].get<int>();
  if (!j.contains("lora_alpha") || !j["lora_alpha"].is_number()) return bad("lora_alpha must be a number");
  c.lora_alpha = j["lora_alpha"].get<double>();
  if (!std::isfinite(c.lora_alpha)) return bad("lora_alpha must be finite");
  const auto flag = [&](const char* key) { return j.contains(key) && j[key].is_boolean() && j[key].get<bool>(); };
  c.use_rslora = flag("use_rslora");
  if (flag("use_dora")) return bad("use_dora = true: DoRA adapters are not supported (only plain LoRA)");
  if (flag("fan_in_fan_out")) return bad("fan_in_fan_out = true: transposed (Conv1D) LoRA weights are not supported");
  if (const std::string bias = string_field("bias"); !bias.empty() && bias != "none") {
    return bad(absl::StrCat("bias = \"", bias,
                            "\": adapters that train the base model's biases are not supported"));
  }
  if (j.contains("modules_to_save") && j["modules_to_save"].is_array() && !j["modules_to_save"].empty()) {
    return bad("modules_to_save is set: adapters that replace whole modules are not supported");
  }
  if (j.contains("target_modules") && j["target_modules"].is_array()) {
    for (const auto& t : j["target_modules"]) {
      if (!t.is_string()) return bad("target_modules must hold strings");
      c.target_modules.push_back(t.get<std::string>());
    }
  }
  for (const char* key : {"rank_pattern", "alpha_pattern"}) {
    if (!j.contains(key) || j[key].is_null()) continue;
    if (!j[key].is_object()) return bad(absl::StrCat(key, " must be an object"));
    for (const auto& [k, v] : j[key].items()) {
      if (!v.is_number()) return bad(absl::StrCat(key, "[\"", k, "\"] must be a number"));
      if (std::string(key) == "rank_pattern") {
        if (!v.is_number_integer() || v.get<int64_t>() < 1 || v.get<int64_t>() > 256) {
          return bad(absl::StrCat("rank_pattern[\"", k, "\"] must be an integer in [1, 256]"));
        }
        c.rank_pattern[k] = v.get<int>();
      } else {
        c.alpha_pattern[k] = v.get<double>();
      }
    }
  }
  c.base_model_name_or_path = string_field("base_model_name_or_path");
  return c;
}

}  // namespace brickserve
