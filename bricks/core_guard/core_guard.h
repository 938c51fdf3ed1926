// The core-region guard: refuses a LoRA brick whose deltas would move the base model's core region
// (the massive-activation dims and super weights of its CoreMap) beyond a bound, with a reason that
// names the layer, the matrix and the dimension, instead of letting it silently ruin every request.
#pragma once

#include "absl/status/status.h"
#include "engine/backend/device.h"
#include "engine/model/core_map.h"
#include "engine/model/lora.h"

namespace brickserve {

struct CoreGuardOptions {
  // Largest allowed ||ΔW slice|| / ||W slice|| on a protected dim (and |ΔW| / |W| on a super weight).
  // A delta that cancels the slice (zeroing a massive dim's writer, which the literature shows breaks
  // the model) is 1.0; 0.5 refuses that with a 2x margin. Trained adapters measured 0.19 at worst
  // (docs/BRICKS.md "Core-region guard").
  double max_relative_delta = 0.5;
};

class CoreGuard {
 public:
  CoreGuard(CoreMap map, CoreGuardOptions options = {}) : map_(std::move(map)), options_(options) {}

  const CoreMap& map() const { return map_; }
  const CoreGuardOptions& options() const { return options_; }
  // Whether any coordinate is protected (otherwise every pair passes at no cost).
  bool active() const { return !map_.dims.empty() || !map_.super_weights.empty(); }

  // Checks one LoRA pair, ΔW = scale · B · A with A [rank, in] and B [out, rank] (F32/F16/BF16), of
  // `layer` / `target`. FAILED_PRECONDITION when a protected slice moves beyond the bound: a dim is
  // protected from the layer it first appears at on, a super weight at its own layer. A pair
  // whose shapes do not fit the model passes here: shapes are the brick's own validation to report.
  absl::Status CheckLoraPair(int layer, LoraTarget target, const HostTensor& a, const HostTensor& b,
                             float scale) const;

  // The largest relative delta the pair puts on a protected coordinate (0 when none); for measurements.
  double MaxRelativeDelta(int layer, LoraTarget target, const HostTensor& a, const HostTensor& b, float scale) const;

 private:
  struct Finding {
    double relative = 0;
    int dim = -1;                     // the worst protected dim, or
    const SuperWeight* sw = nullptr;  // the worst super weight
  };
  // Worst protected dim and worst super weight of the pair (kept apart so a dim is named first).
  void Worst(int layer, LoraTarget target, const HostTensor& a, const HostTensor& b, float scale, Finding* dim,
             Finding* super_weight) const;

  CoreMap map_;
  CoreGuardOptions options_;
};

}  // namespace brickserve
