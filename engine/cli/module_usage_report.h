// The text report of a ModuleTrace (CONCEPTS.md §1 traceability): per layer, how the tokens spread
// over the FFN modules, which modules no token used (ModuleFormer's pruning candidates), and how
// much of the FFN ran. Shared by `brickserve modules stats` on a text file and on a server's
// counters.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/modules/module_trace.h"

namespace brickserve {

// One layer's usage, every share = tokens that used the module / tokens.
struct LayerUsage {
  int layer = 0;
  double min_share = 0, median_share = 0, mean_share = 0, max_share = 0;
  std::vector<int> most_used;   // module ids, most used first (ties to the lower id)
  std::vector<int> least_used;  // module ids, least used first (ties to the lower id)
  std::vector<int> never_used;  // ascending
  std::vector<double> shares;   // [num_modules]
};

// `extremes`: how many of the most and least used modules to list.
LayerUsage SummarizeLayerUsage(const ModuleTrace& trace, int layer, int extremes = 8);

// One character per module share: ' ' for 0, then ▁▂▃▄▅▆▇█ up to `scale` (values above it are
// shown as █); at most `width` characters: more modules are averaged over buckets of adjacent ids.
std::string ShareSparkline(const std::vector<double>& shares, double scale, int width = 64);

struct ModuleUsageReportOptions {
  int extremes = 8;          // most / least used modules listed per layer
  int sparkline_width = 64;  // characters of the per-layer sparkline (module-id order)
  int max_never_used = 32;   // never-used module ids listed per layer (the count is always given)
  std::string title;         // a first line, e.g. the text and policy
};

// The report: a header (tokens, overall effective density, modules per layer), then per layer the
// min / median / max share, a sparkline in module-id order, the most and least used modules and
// the never-used ones, and finally the pruning candidates over every layer.
std::string FormatModuleUsageReport(const ModuleTrace& trace, const ModuleUsageReportOptions& options = {});

}  // namespace brickserve
