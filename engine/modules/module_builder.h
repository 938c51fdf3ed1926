// `brickserve modules build`: carves a dense model's FFNs into emergent modules (MoEfication,
// arXiv 2110.01786; CMoE for SwiGLU) and fits a router per layer, from activations recorded on
// calibration text the user gives.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/engine.h"
#include "engine/modules/module_set.h"

namespace brickserve {

struct ModuleBuildOptions {
  // "weights": balanced k-means over each neuron's normalised gate and up rows. "coactivation":
  // over which calibration tokens put the neuron among their top `coactivation_top_fraction`.
  std::string clustering = "weights";
  // "linear": ridge least squares from the FFN input to each module's share of |activation|.
  // "centroid": the mean normalised gate row of the module. "auto": per layer, whichever catches
  // more of the oracle's activation mass on held-out tokens.
  std::string router = "auto";
  int module_size = 0;          // neurons per module; 0 = DefaultModuleSize(d_ff)
  int max_tokens = 4096;        // calibration tokens used (the text is cut there)
  double coactivation_top_fraction = 0.1;
  int holdout_every = 4;        // every n-th calibration token is held out to compare the routers
  double ridge_lambda = 1e-2;
  double compare_density = 0.3;  // routers are compared at this share of modules
  std::vector<float> threshold_densities;  // empty = 0.05, 0.10, ..., 1.0
  uint64_t seed = 1;
};

// The divisor of d_ff nearest d_ff / 96 (at least 4): about 96 modules per layer.
int DefaultModuleSize(int d_ff);

// Runs the calibration tokens through `engine` (dense), clusters each layer's neurons, fits and
// compares the routers, calibrates the threshold policy and marks the core map's super-weight
// neurons resident. The result records the engine's model; its report_json holds the per-layer
// router recall of each kind and the one kept.
absl::StatusOr<ModuleSet> BuildModuleSet(Engine& engine, std::span<const int32_t> calibration_ids,
                                         const CoreMap& core_map, const ModuleBuildOptions& options);

}  // namespace brickserve
