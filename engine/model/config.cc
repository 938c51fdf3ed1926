#include "engine/model/config.h"

#include <cmath>
#include <filesystem>
#include <numbers>

#include "absl/strings/str_cat.h"
#include "engine/util/read_file.h"
#include "engine/util/status_macros.h"
#include "nlohmann/json.hpp"

namespace brickserve {
namespace {

using nlohmann::json;

absl::Status FieldError(const std::string& field, const std::string& problem) {
  return absl::InvalidArgumentError(absl::StrCat("config.json: ", field, " ", problem));
}

// Reads a positive integer field; `fallback` < 0 means the field is required.
absl::StatusOr<int> PositiveInt(const json& j, const std::string& field, int fallback = -1) {
  if (!j.contains(field) || j[field].is_null()) {
    if (fallback >= 0) return fallback;
    return FieldError(field, "is required");
  }
  const json& v = j[field];
  if (!v.is_number_integer() || v.get<int64_t>() <= 0 || v.get<int64_t>() > (int64_t{1} << 30)) {
    return FieldError(field, absl::StrCat("must be a positive integer, got ", v.dump()));
  }
  return static_cast<int>(v.get<int64_t>());
}

absl::StatusOr<double> PositiveNumber(const json& j, const std::string& field, double fallback) {
  if (!j.contains(field) || j[field].is_null()) return fallback;
  const json& v = j[field];
  if (!v.is_number() || !(v.get<double>() > 0)) {
    return FieldError(field, absl::StrCat("must be a positive number, got ", v.dump()));
  }
  return v.get<double>();
}

bool BoolOr(const json& j, const std::string& field, bool fallback) {
  return j.contains(field) && j[field].is_boolean() ? j[field].get<bool>() : fallback;
}

// Token id fields may be an integer, a list of integers, or null.
absl::StatusOr<std::vector<int32_t>> TokenIds(const json& j, const std::string& field,
                                              const std::string& file) {
  std::vector<int32_t> ids;
  if (!j.contains(field) || j[field].is_null()) return ids;
  const json& v = j[field];
  auto bad = [&] {
    return absl::InvalidArgumentError(
        absl::StrCat(file, ": ", field, " must be a token id or a list of ids, got ", v.dump()));
  };
  if (v.is_number_integer()) {
    ids.push_back(v.get<int32_t>());
  } else if (v.is_array()) {
    for (const auto& e : v) {
      if (!e.is_number_integer()) return bad();
      ids.push_back(e.get<int32_t>());
    }
  } else {
    return bad();
  }
  return ids;
}

// RoPE settings come as "rope_theta" + "rope_scaling" (transformers 4) or as one object,
// "rope_parameters", holding rope_theta and the scaling fields (transformers 5).
absl::Status ParseRope(const json& j, double* theta, RopeScaling* out) {
  const bool v5 = j.contains("rope_parameters") && !j["rope_parameters"].is_null();
  const char* field = v5 ? "rope_parameters" : "rope_scaling";
  if (v5 && !j["rope_parameters"].is_object()) return FieldError(field, "must be an object or null");
  const json& theta_holder = v5 && j["rope_parameters"].contains("rope_theta") ? j["rope_parameters"] : j;
  BS_ASSIGN_OR_RETURN(*theta, PositiveNumber(theta_holder, "rope_theta", 10000.0));
  if (!j.contains(field) || j[field].is_null()) return absl::OkStatus();
  const json& rs = j[field];
  if (!rs.is_object()) return FieldError(field, "must be an object or null");
  std::string type;
  if (rs.contains("rope_type") && rs["rope_type"].is_string()) type = rs["rope_type"].get<std::string>();
  else if (rs.contains("type") && rs["type"].is_string()) type = rs["type"].get<std::string>();
  if (type == "default") return absl::OkStatus();
  BS_ASSIGN_OR_RETURN(out->factor, PositiveNumber(rs, "factor", 1.0));
  if (type == "linear") {
    out->type = RopeScaling::Type::kLinear;
  } else if (type == "llama3") {
    out->type = RopeScaling::Type::kLlama3;
    BS_ASSIGN_OR_RETURN(out->low_freq_factor, PositiveNumber(rs, "low_freq_factor", 1.0));
    BS_ASSIGN_OR_RETURN(out->high_freq_factor, PositiveNumber(rs, "high_freq_factor", 4.0));
    BS_ASSIGN_OR_RETURN(out->original_max_position_embeddings,
                        PositiveInt(rs, "original_max_position_embeddings", 8192));
    if (out->high_freq_factor <= out->low_freq_factor) {
      return FieldError(absl::StrCat(field, ".high_freq_factor"), "must exceed low_freq_factor");
    }
  } else {
    return FieldError(absl::StrCat(field, ".rope_type"),
                      absl::StrCat("\"", type, "\" is not supported (supported: default, linear, llama3)"));
  }
  return absl::OkStatus();
}

}  // namespace

std::vector<float> ModelConfig::RopeInvFreq() const {
  const int half = head_dim / 2;
  std::vector<float> inv(half);
  for (int i = 0; i < half; ++i) {
    double f = 1.0 / std::pow(rope_theta, (2.0 * i) / head_dim);
    if (rope_scaling.type == RopeScaling::Type::kLinear) {
      f /= rope_scaling.factor;
    } else if (rope_scaling.type == RopeScaling::Type::kLlama3) {
      // Llama 3.1: keep high frequencies, divide low ones by `factor`, blend in between.
      const auto& rs = rope_scaling;
      const double old_ctx = static_cast<double>(rs.original_max_position_embeddings);
      const double low_wavelen = old_ctx / rs.low_freq_factor;
      const double high_wavelen = old_ctx / rs.high_freq_factor;
      const double wavelen = 2.0 * std::numbers::pi / f;
      if (wavelen > low_wavelen) {
        f /= rs.factor;
      } else if (wavelen >= high_wavelen) {
        const double smooth = (old_ctx / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
        f = (1.0 - smooth) * f / rs.factor + smooth * f;
      }
    }
    inv[i] = static_cast<float>(f);
  }
  return inv;
}

absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& config_json,
                                             const std::string& generation_config_json) {
  json j = json::parse(config_json, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("config.json: not a JSON object");
  }
  ModelConfig c;
  if (!j.contains("architectures") || !j["architectures"].is_array() || j["architectures"].empty() ||
      !j["architectures"][0].is_string()) {
    return FieldError("architectures", "must list the model class, e.g. [\"LlamaForCausalLM\"]");
  }
  c.architecture_name = j["architectures"][0].get<std::string>();
  if (c.architecture_name == "LlamaForCausalLM") {
    c.architecture = Architecture::kLlama;
  } else if (c.architecture_name == "MistralForCausalLM") {
    c.architecture = Architecture::kMistral;
  } else if (c.architecture_name == "Qwen2ForCausalLM") {
    c.architecture = Architecture::kQwen2;
  } else {
    return FieldError("architectures", absl::StrCat("\"", c.architecture_name,
                                                    "\" is not supported (supported: LlamaForCausalLM, "
                                                    "MistralForCausalLM, Qwen2ForCausalLM)"));
  }
  const std::string act = j.value("hidden_act", std::string("silu"));
  if (act != "silu") return FieldError("hidden_act", absl::StrCat("\"", act, "\" is not supported (supported: silu)"));
  if (BoolOr(j, "mlp_bias", false)) return FieldError("mlp_bias", "true is not supported");

  BS_ASSIGN_OR_RETURN(c.hidden_size, PositiveInt(j, "hidden_size"));
  BS_ASSIGN_OR_RETURN(c.intermediate_size, PositiveInt(j, "intermediate_size"));
  BS_ASSIGN_OR_RETURN(c.num_layers, PositiveInt(j, "num_hidden_layers"));
  BS_ASSIGN_OR_RETURN(c.num_heads, PositiveInt(j, "num_attention_heads"));
  BS_ASSIGN_OR_RETURN(c.num_kv_heads, PositiveInt(j, "num_key_value_heads", c.num_heads));
  if (c.hidden_size % c.num_heads != 0 && !(j.contains("head_dim") && !j["head_dim"].is_null())) {
    return FieldError("hidden_size", absl::StrCat(c.hidden_size, " is not divisible by num_attention_heads ",
                                                  c.num_heads, " and no head_dim is given"));
  }
  BS_ASSIGN_OR_RETURN(c.head_dim, PositiveInt(j, "head_dim", c.hidden_size / c.num_heads));
  if (c.head_dim % 2 != 0) return FieldError("head_dim", absl::StrCat(c.head_dim, " must be even for RoPE"));
  if (c.num_heads % c.num_kv_heads != 0) {
    return FieldError("num_key_value_heads", absl::StrCat(c.num_kv_heads, " must divide num_attention_heads ",
                                                          c.num_heads));
  }
  BS_ASSIGN_OR_RETURN(c.vocab_size, PositiveInt(j, "vocab_size"));
  BS_ASSIGN_OR_RETURN(c.max_position_embeddings, PositiveInt(j, "max_position_embeddings", 2048));
  BS_ASSIGN_OR_RETURN(c.rms_norm_eps, PositiveNumber(j, "rms_norm_eps", 1e-6));
  BS_RETURN_IF_ERROR(ParseRope(j, &c.rope_theta, &c.rope_scaling));
  c.tie_word_embeddings = BoolOr(j, "tie_word_embeddings", false);
  c.qkv_bias = c.architecture == Architecture::kQwen2 || BoolOr(j, "attention_bias", false);

  if (c.architecture == Architecture::kMistral) {
    if (j.contains("sliding_window") && j["sliding_window"].is_number_integer()) {
      c.sliding_window = j["sliding_window"].get<int>();
    }
  } else if (c.architecture == Architecture::kQwen2 && BoolOr(j, "use_sliding_window", false)) {
    BS_ASSIGN_OR_RETURN(c.sliding_window, PositiveInt(j, "sliding_window", 4096));
  }

  BS_ASSIGN_OR_RETURN(c.bos_token_ids, TokenIds(j, "bos_token_id", "config.json"));
  BS_ASSIGN_OR_RETURN(c.eos_token_ids, TokenIds(j, "eos_token_id", "config.json"));
  if (!generation_config_json.empty()) {
    json g = json::parse(generation_config_json, nullptr, false);
    if (g.is_discarded() || !g.is_object()) {
      return absl::InvalidArgumentError("generation_config.json: not a JSON object");
    }
    BS_ASSIGN_OR_RETURN(auto eos, TokenIds(g, "eos_token_id", "generation_config.json"));
    if (!eos.empty()) c.eos_token_ids = eos;
    BS_ASSIGN_OR_RETURN(auto bos, TokenIds(g, "bos_token_id", "generation_config.json"));
    if (!bos.empty()) c.bos_token_ids = bos;
  }
  for (int32_t id : c.eos_token_ids) {
    if (id < 0 || id >= c.vocab_size) {
      return FieldError("eos_token_id", absl::StrCat(id, " is outside the vocabulary of ", c.vocab_size));
    }
  }
  return c;
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir) {
  namespace fs = std::filesystem;
  const fs::path dir(model_dir);
  if (!fs::is_directory(dir)) return absl::NotFoundError(absl::StrCat("model directory ", model_dir, " does not exist"));
  BS_ASSIGN_OR_RETURN(std::string config, ReadFileToString((dir / "config.json").string()));
  std::string generation;
  if (fs::exists(dir / "generation_config.json")) {
    BS_ASSIGN_OR_RETURN(generation, ReadFileToString((dir / "generation_config.json").string()));
  }
  return ParseModelConfig(config, generation);
}

}  // namespace brickserve
