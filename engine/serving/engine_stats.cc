#include "engine/serving/engine_stats.h"

#include <algorithm>

namespace brickserve {

void LatencyHistogram::Observe(double seconds) {
  const size_t bucket = std::lower_bound(kBounds.begin(), kBounds.end(), seconds) - kBounds.begin();
  std::lock_guard<std::mutex> lock(mu_);
  ++data_.counts[bucket];
  ++data_.count;
  data_.sum += seconds;
}

LatencyHistogram::Snapshot LatencyHistogram::Get() const {
  std::lock_guard<std::mutex> lock(mu_);
  return data_;
}

double LatencyHistogram::Snapshot::Quantile(double q) const {
  if (count == 0) return 0;
  const double target = q * static_cast<double>(count);
  uint64_t seen = 0;
  for (size_t i = 0; i < kBounds.size(); ++i) {
    seen += counts[i];
    if (static_cast<double>(seen) >= target) return kBounds[i];
  }
  return kBounds.back();  // in the +Inf bucket: the largest finite bound is all that is known
}

}  // namespace brickserve
