#include "engine/modules/router_policy.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "engine/modules/module_set.h"

namespace brickserve {

int RouterPolicy::ModulesPerToken(int num_modules) const {
  switch (mode) {
    case RouterMode::kDense: return num_modules;
    case RouterMode::kTopK: return std::clamp(k, 1, num_modules);
    case RouterMode::kDensity:
      return std::clamp(static_cast<int>(std::floor(static_cast<double>(density) * num_modules + 0.5)), 1,
                        num_modules);
  }
  return num_modules;
}

absl::string_view RouterModeName(RouterMode mode) {
  switch (mode) {
    case RouterMode::kDense: return "dense";
    case RouterMode::kTopK: return "top_k";
    case RouterMode::kDensity: return "density";
  }
  return "?";
}

absl::string_view ModuleSelectorName(ModuleSelector s) {
  switch (s) {
    case ModuleSelector::kRouter: return "router";
    case ModuleSelector::kThreshold: return "threshold";
    case ModuleSelector::kOracle: return "oracle";
    case ModuleSelector::kRandom: return "random";
  }
  return "?";
}

std::optional<ModuleSelector> ModuleSelectorFromName(absl::string_view name) {
  for (ModuleSelector s : {ModuleSelector::kRouter, ModuleSelector::kThreshold, ModuleSelector::kOracle,
                           ModuleSelector::kRandom}) {
    if (name == ModuleSelectorName(s)) return s;
  }
  return std::nullopt;
}

std::string RouterPolicyToString(const RouterPolicy& p) {
  switch (p.mode) {
    case RouterMode::kDense: return p.disabled ? "dense (some modules disabled)" : "dense";
    case RouterMode::kTopK: return absl::StrCat("top_k k=", p.k, " (", ModuleSelectorName(p.selector), ")");
    case RouterMode::kDensity:
      return absl::StrCat("density ", p.density, " (", ModuleSelectorName(p.selector), ")");
  }
  return "?";
}

absl::Status ValidateRouterPolicy(const RouterPolicy& p, const ModuleSet* modules) {
  if (!p.sparse()) return absl::OkStatus();
  if (p.mode == RouterMode::kDensity && !(p.density > 0.0f && p.density <= 1.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("router.density must be in (0, 1], got ", p.density));
  }
  if (modules == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("router policy ", RouterPolicyToString(p),
                     " needs a module set and this server has none (build one with `brickserve modules build`"
                     " and start the server with modules: PATH)"));
  }
  if (p.mode == RouterMode::kTopK && (p.k < 1 || p.k > modules->num_modules)) {
    return absl::InvalidArgumentError(
        absl::StrCat("router.k must be in [1, ", modules->num_modules, "] (the modules per layer), got ", p.k));
  }
  if (p.selector == ModuleSelector::kThreshold) {
    if (p.mode != RouterMode::kDensity) {
      return absl::InvalidArgumentError("router.policy: the threshold selector takes a density, not top_k");
    }
    if (modules->threshold_densities.empty()) {
      return absl::FailedPreconditionError("router.policy: the module set has no calibrated thresholds");
    }
  }
  if (p.disabled && p.disabled->size() != static_cast<size_t>(modules->num_layers) * modules->num_modules) {
    return absl::InvalidArgumentError("router: the disabled-module mask does not match the module set");
  }
  return absl::OkStatus();
}

absl::StatusOr<RouterPolicy> ParseRouterPolicy(absl::string_view text) {
  const std::vector<absl::string_view> parts = absl::StrSplit(text, ':');
  RouterPolicy p;
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("router policy \"", text, "\": ", why,
                                                   " (expected dense, top_k:K or density:D, optionally followed by "
                                                   ":router, :threshold, :oracle or :random)"));
  };
  if (parts[0] == "dense") {
    if (parts.size() != 1) return bad("dense takes no arguments");
    return p;
  }
  if (parts.size() < 2 || parts.size() > 3) return bad("wrong number of fields");
  if (parts[0] == "top_k") {
    p.mode = RouterMode::kTopK;
    if (!absl::SimpleAtoi(parts[1], &p.k)) return bad("K is not an integer");
  } else if (parts[0] == "density") {
    p.mode = RouterMode::kDensity;
    if (!absl::SimpleAtof(parts[1], &p.density)) return bad("D is not a number");
  } else {
    return bad("unknown policy");
  }
  if (parts.size() == 3) {
    const std::optional<ModuleSelector> s = ModuleSelectorFromName(parts[2]);
    if (!s) return bad("unknown selector");
    p.selector = *s;
  }
  return p;
}

}  // namespace brickserve
