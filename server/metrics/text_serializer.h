// The Prometheus text exposition format (version 0.0.4), which every Prometheus server scrapes.
#pragma once

#include <string>
#include <vector>

#include "server/metrics/metrics.h"

namespace brickserve::metrics {

inline constexpr char kTextContentType[] = "text/plain; version=0.0.4; charset=utf-8";

// HELP and TYPE lines, then one line per sample; histograms as _bucket{le=...}, _sum, _count.
std::string SerializeText(const std::vector<MetricFamily>& families);

}  // namespace brickserve::metrics
