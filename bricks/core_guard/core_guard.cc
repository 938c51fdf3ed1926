#include "bricks/core_guard/core_guard.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace brickserve {
namespace {

// "layers.1.mlp.down_proj": the module path without its "model." root, for messages.
std::string ModuleName(int layer, LoraTarget t) {
  return LoraTargetModule(layer, t).substr(std::string_view("model.").size());
}

// NaN (a corrupt adapter) counts as infinitely far, so it is refused rather than compared away.
double Relative(double delta, double base) {
  if (std::isnan(delta)) return std::numeric_limits<double>::infinity();
  if (base > 0) return delta / base;
  return delta > 0 ? std::numeric_limits<double>::infinity() : 0.0;
}

}  // namespace

void CoreGuard::Worst(int layer, LoraTarget t, const HostTensor& a, const HostTensor& b, float scale, Finding* dim,
                      Finding* super_weight) const {
  *dim = *super_weight = Finding{};
  if (!active() || layer < 0 || layer >= static_cast<int>(map_.base_norms.size())) return;
  if (a.shape.size() != 2 || b.shape.size() != 2 || a.shape[0] != b.shape[1] || a.shape[0] <= 0) return;
  const int64_t rank = a.shape[0], in = a.shape[1], out = b.shape[0];
  const bool row = CoreSliceIsRow(t);
  if ((row ? out : in) != map_.model.hidden_size) return;
  const auto A = [&](int64_t r, int64_t c) { return static_cast<double>(WidenedElement(a, r * in + c)); };
  const auto B = [&](int64_t o, int64_t r) { return static_cast<double>(WidenedElement(b, o * rank + r)); };

  const std::vector<float>& base = map_.base_norms[layer][static_cast<int>(t)];
  std::vector<double> coef(rank);
  for (size_t k = 0; k < map_.dims.size() && k < base.size(); ++k) {
    // Before the layer it appears at, the dim carries ordinary values through ordinary weights.
    if (layer < map_.dims[k].first_layer) continue;
    const int d = map_.dims[k].dim;
    double sum = 0;
    if (row) {  // ΔW[d, :] = scale · B[d, :] · A
      for (int64_t r = 0; r < rank; ++r) coef[r] = B(d, r);
      for (int64_t c = 0; c < in; ++c) {
        double x = 0;
        for (int64_t r = 0; r < rank; ++r) x += coef[r] * A(r, c);
        sum += x * x;
      }
    } else {  // ΔW[:, d] = scale · B · A[:, d]
      for (int64_t r = 0; r < rank; ++r) coef[r] = A(r, d);
      for (int64_t o = 0; o < out; ++o) {
        double x = 0;
        for (int64_t r = 0; r < rank; ++r) x += B(o, r) * coef[r];
        sum += x * x;
      }
    }
    const double rel = Relative(std::fabs(scale) * std::sqrt(sum), base[k]);
    if (rel > dim->relative) *dim = {rel, d, nullptr};
  }
  if (t != LoraTarget::kDown) return;
  for (const SuperWeight& sw : map_.super_weights) {
    if (sw.layer != layer || sw.row >= out || sw.col >= in) continue;
    double x = 0;
    for (int64_t r = 0; r < rank; ++r) x += B(sw.row, r) * A(r, sw.col);
    const double rel = Relative(std::fabs(scale * x), std::fabs(sw.value));
    if (rel > super_weight->relative) *super_weight = {rel, -1, &sw};
  }
}

double CoreGuard::MaxRelativeDelta(int layer, LoraTarget t, const HostTensor& a, const HostTensor& b,
                                   float scale) const {
  Finding dim, sw;
  Worst(layer, t, a, b, scale, &dim, &sw);
  return std::max(dim.relative, sw.relative);
}

absl::Status CoreGuard::CheckLoraPair(int layer, LoraTarget t, const HostTensor& a, const HostTensor& b,
                                      float scale) const {
  Finding dim, sw;
  Worst(layer, t, a, b, scale, &dim, &sw);
  const double bound = options_.max_relative_delta;
  if (dim.relative > bound) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "LoRA delta on core dimension %d of %s (its %s %d) is %.4gx the base weights' norm there (bound %g): the "
        "brick would disturb a massive-activation dimension",
        dim.dim, ModuleName(layer, t), CoreSliceIsRow(t) ? "row" : "column", dim.dim, dim.relative, bound));
  }
  if (sw.relative > bound) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "LoRA delta on the super weight [%d, %d] of %s is %.4gx its value (bound %g): the brick would disturb a "
        "weight that feeds a massive activation",
        sw.sw->row, sw.sw->col, ModuleName(layer, t), sw.relative, bound));
  }
  return absl::OkStatus();
}

}  // namespace brickserve
