// How a request's tokens use the FFN modules (CONCEPTS.md §1): all of them (dense), the k best per
// token, or a target density; chosen by the learned router or, for evaluation and the training-free
// alternative, by activation thresholds, the oracle (true top-k) or at random.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace brickserve {

struct ModuleSet;

enum class RouterMode : uint8_t { kDense, kTopK, kDensity };

enum class ModuleSelector : uint8_t {
  kRouter,     // the module set's per-layer router scores the modules from the FFN input
  kThreshold,  // TEAL/CATS: neurons whose |silu(gate·x)| clears the layer's calibrated threshold
  kOracle,     // the k modules with the largest true activation mass (computes the dense FFN first)
  kRandom,     // k modules at random (the baseline a router must beat)
};

struct RouterPolicy {
  RouterMode mode = RouterMode::kDense;
  ModuleSelector selector = ModuleSelector::kRouter;
  int k = 0;             // kTopK: modules per token and layer
  float density = 1.0f;  // kDensity: the fraction of modules (or of neurons, with kThreshold)
  // Evaluation only: modules never run, [layer * num_modules + m] (the functional-partition
  // experiment). Null: none.
  std::shared_ptr<const std::vector<uint8_t>> disabled;

  // Whether the FFN must take the sparse path (a router policy, or dense minus disabled modules).
  bool sparse() const { return mode != RouterMode::kDense || disabled != nullptr; }
  // Modules per token out of `num_modules`: k, round(density * N) (at least 1), or all.
  int ModulesPerToken(int num_modules) const;
};

absl::string_view RouterModeName(RouterMode mode);        // "dense", "top_k", "density"
absl::string_view ModuleSelectorName(ModuleSelector s);   // "router", "threshold", "oracle", "random"
std::optional<ModuleSelector> ModuleSelectorFromName(absl::string_view name);
std::string RouterPolicyToString(const RouterPolicy& p);  // "top_k k=4 (router)"

// INVALID_ARGUMENT naming the field ("router.k", "router.density", "router.policy") and the limit;
// FAILED_PRECONDITION when a sparse policy is asked of a server without a module set.
absl::Status ValidateRouterPolicy(const RouterPolicy& p, const ModuleSet* modules);

// The command-line and config spelling: "dense", "top_k:K", "density:D", with an optional
// ":router|threshold|oracle|random" suffix (default router).
absl::StatusOr<RouterPolicy> ParseRouterPolicy(absl::string_view text);

}  // namespace brickserve
