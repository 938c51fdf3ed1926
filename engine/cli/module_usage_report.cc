#include "engine/cli/module_usage_report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "absl/strings/str_cat.h"

namespace brickserve {
namespace {

std::string Pct(double share) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f%%", 100.0 * share);
  return buf;
}

std::string ModuleList(const std::vector<int>& ids, const std::vector<double>& shares) {
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) absl::StrAppend(&out, i ? " " : "", ids[i], ":", Pct(shares[ids[i]]));
  return out;
}

}  // namespace

LayerUsage SummarizeLayerUsage(const ModuleTrace& trace, int layer, int extremes) {
  LayerUsage u;
  u.layer = layer;
  const int N = trace.num_modules;
  if (N <= 0 || layer < 0 || layer >= trace.num_layers) return u;
  u.shares.resize(N);
  for (int m = 0; m < N; ++m) {
    u.shares[m] = trace.tokens ? static_cast<double>(trace.at(layer, m)) / static_cast<double>(trace.tokens) : 0.0;
    if (trace.at(layer, m) == 0) u.never_used.push_back(m);
  }
  std::vector<double> sorted = u.shares;
  std::sort(sorted.begin(), sorted.end());
  u.min_share = sorted.front();
  u.max_share = sorted.back();
  u.median_share = N % 2 ? sorted[N / 2] : 0.5 * (sorted[N / 2 - 1] + sorted[N / 2]);
  u.mean_share = std::accumulate(sorted.begin(), sorted.end(), 0.0) / N;
  std::vector<int> order(N);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return trace.at(layer, a) > trace.at(layer, b); });
  const int k = std::clamp(extremes, 0, N);
  u.most_used.assign(order.begin(), order.begin() + k);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return trace.at(layer, a) < trace.at(layer, b); });
  u.least_used.assign(order.begin(), order.begin() + k);
  return u;
}

std::string ShareSparkline(const std::vector<double>& shares, double scale, int width) {
  static const char* const kBars[] = {"▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"};
  const size_t n = shares.size();
  if (n == 0) return "";
  const size_t w = std::min(n, static_cast<size_t>(std::max(1, width)));
  std::string out;
  for (size_t c = 0; c < w; ++c) {
    const size_t lo = c * n / w, hi = (c + 1) * n / w;
    double v = 0;
    for (size_t i = lo; i < hi; ++i) v += shares[i];
    v /= static_cast<double>(hi - lo);
    if (v <= 0) {
      out += " ";
      continue;
    }
    const double x = scale > 0 ? v / scale : 1.0;
    const int level = std::clamp(static_cast<int>(std::ceil(x * 8.0)) - 1, 0, 7);
    out += kBars[level];
  }
  return out;
}

std::string FormatModuleUsageReport(const ModuleTrace& trace, const ModuleUsageReportOptions& options) {
  std::string out;
  if (!options.title.empty()) absl::StrAppend(&out, options.title, "\n");
  if (trace.empty() || trace.tokens == 0) {
    absl::StrAppend(&out, "no module usage recorded (no tokens went through the module FFN)\n");
    return out;
  }
  const int L = trace.num_layers, N = trace.num_modules;
  char density[64];
  std::snprintf(density, sizeof(density), "%.4f", trace.density());
  absl::StrAppend(&out, "tokens: ", trace.tokens, "   layers: ", L, "   modules per layer: ", N,
                  "   effective density: ", density, " (FFN neurons computed / dense, resident included)\n");
  std::vector<LayerUsage> layers;
  double scale = 0;
  for (int l = 0; l < L; ++l) {
    layers.push_back(SummarizeLayerUsage(trace, l, options.extremes));
    scale = std::max(scale, layers.back().max_share);
  }
  const int width = std::min(N, std::max(1, options.sparkline_width));
  absl::StrAppend(&out, "share = tokens that used the module / tokens; sparkline: modules in id order",
                  width < N ? absl::StrCat(" (", N, " modules averaged into ", width, " columns)") : "",
                  ", █ = ", Pct(scale), "\n");
  int never_total = 0;
  for (const LayerUsage& u : layers) {
    never_total += static_cast<int>(u.never_used.size());
    absl::StrAppend(&out, "\nlayer ", u.layer, ": share min ", Pct(u.min_share), "  median ", Pct(u.median_share),
                    "  mean ", Pct(u.mean_share), "  max ", Pct(u.max_share), "\n");
    absl::StrAppend(&out, "  |", ShareSparkline(u.shares, scale, width), "|\n");
    absl::StrAppend(&out, "  most used:  ", ModuleList(u.most_used, u.shares), "\n");
    absl::StrAppend(&out, "  least used: ", ModuleList(u.least_used, u.shares), "\n");
    absl::StrAppend(&out, "  never used: ", u.never_used.size());
    if (!u.never_used.empty()) {
      out += " [";
      const size_t shown = std::min(u.never_used.size(), static_cast<size_t>(std::max(0, options.max_never_used)));
      for (size_t i = 0; i < shown; ++i) absl::StrAppend(&out, i ? " " : "", u.never_used[i]);
      if (shown < u.never_used.size()) absl::StrAppend(&out, " ... ", u.never_used.size() - shown, " more");
      out += "]";
    }
    out += "\n";
  }
  absl::StrAppend(&out, "\npruning candidates (modules no token used): ", never_total, " of ",
                  static_cast<int64_t>(L) * N, " over all layers\n");
  return out;
}

}  // namespace brickserve
