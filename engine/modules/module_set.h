// Emergent modules of a base model (CONCEPTS.md §1, MoEfication): each layer's SwiGLU FFN neurons
// split into N modules of equal size, a per-layer router that scores the modules from the FFN input,
// the resident neurons that always run (the core region), and per-layer activation thresholds for
// the training-free threshold policy. Built offline by `brickserve modules build`, loaded at start-up,
// refused for any model but the one it was built for.
//
// File format: one safetensors file.
//   __metadata__["brickserve.modules"]: JSON {format_version, model: {architecture, hidden_size,
//     intermediate_size, num_layers, fingerprint}, num_layers, num_modules, module_size, clustering,
//     router, calibration_tokens, threshold_densities: [G ascending floats in (0, 1]], report: {...}}
//   layers.{l}.modules        I32 [N, S]  neuron ids of each module; every neuron in exactly one module
//   layers.{l}.resident       I32 [R]     neurons computed whatever the router says (absent when R = 0)
//   layers.{l}.router.weight  F32 [N, H]  module scores = weight · x + bias, x = the FFN input
//   layers.{l}.router.bias    F32 [N]       (post_attention_layernorm output)
//   layers.{l}.thresholds     F32 [G]     |silu(gate·x)| cut-off keeping threshold_densities[g] of the
//                                         neurons on calibration text (descending)
#pragma once

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/model/config.h"
#include "engine/model/model_identity.h"

namespace brickserve {

inline constexpr int kModuleSetFormatVersion = 1;
inline constexpr const char* kModuleSetMetadataKey = "brickserve.modules";

struct ModuleLayer {
  std::vector<int32_t> modules;        // [N * S], module m = modules[m*S .. (m+1)*S)
  std::vector<int32_t> resident;       // ascending
  std::vector<float> router_weight;    // [N * H]
  std::vector<float> router_bias;      // [N]
  std::vector<float> thresholds;       // [G]
};

struct ModuleSet {
  ModelIdentity model;
  int num_layers = 0;
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_modules = 0;   // N per layer
  int module_size = 0;   // S; N * S == intermediate_size
  std::string clustering;  // how modules were formed: "weights", "coactivation" (or a tool's own name)
  std::string router;      // "linear" | "centroid"
  int64_t calibration_tokens = 0;
  std::vector<float> threshold_densities;  // [G] ascending
  std::string report_json = "{}";          // the builder's measurements (router recall, ...)
  std::vector<ModuleLayer> layers;

  // INVALID_ARGUMENT naming the tensor or field when shapes or ids are inconsistent.
  absl::Status Validate() const;
  // The threshold of `layer` for `density` (linear between the calibrated densities, clamped).
  float ThresholdFor(int layer, float density) const;
};

// What the threshold policy compares with a layer's thresholds: |silu(gate·x)| of one neuron. The
// builder calibrates with it and the runtime cuts with it, so both must use this one definition.
inline float ThresholdActivation(float gate) { return std::fabs(gate / (1.0f + std::exp(-gate))); }

absl::Status WriteModuleSet(const ModuleSet& set, const std::string& path);
// INVALID_ARGUMENT for a corrupt or inconsistent file (naming it); FAILED_PRECONDITION when it was
// built for another model than `model`.
absl::StatusOr<std::shared_ptr<const ModuleSet>> ReadModuleSet(const std::string& path);
absl::StatusOr<std::shared_ptr<const ModuleSet>> ReadModuleSetFor(const std::string& path,
                                                                  const std::string& model_dir,
                                                                  const ModelConfig& config);

}  // namespace brickserve
