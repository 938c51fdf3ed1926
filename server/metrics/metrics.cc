#include "server/metrics/metrics.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace brickserve::metrics {

void CheckName(const std::string& name, bool label) {
  // [a-zA-Z_:][a-zA-Z0-9_:]* for metrics; labels without ':' and not starting with "__".
  bool ok = !name.empty() && !std::isdigit(static_cast<unsigned char>(name[0]));
  for (char c : name) {
    ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || (!label && c == ':'));
  }
  if (label) ok = ok && name.rfind("__", 0) != 0;
  if (!ok) {
    std::fprintf(stderr, "metrics: invalid %s name \"%s\"\n", label ? "label" : "metric", name.c_str());
    std::abort();
  }
}

Histogram::Histogram(BucketBoundaries bounds)
    : bounds_(std::move(bounds)), counts_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  for (size_t i = 0; i < bounds_.size(); ++i) {
    if (!std::isfinite(bounds_[i]) || (i > 0 && bounds_[i] <= bounds_[i - 1])) {
      std::fprintf(stderr, "metrics: histogram bounds must be finite and strictly increasing\n");
      std::abort();
    }
  }
  for (size_t i = 0; i <= bounds_.size(); ++i) counts_[i].store(0);
}

void Histogram::Observe(double v) {
  // Prometheus buckets are "less than or equal to" their upper bound.
  const size_t bucket = std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin();
  counts_[bucket].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

ClientMetric Histogram::Collect() const {
  ClientMetric m;
  uint64_t cumulative = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    cumulative += counts_[i].load(std::memory_order_relaxed);
    m.buckets.emplace_back(i < bounds_.size() ? bounds_[i] : INFINITY, cumulative);
  }
  m.sample_count = cumulative;
  m.sample_sum = sum_.load(std::memory_order_relaxed);
  return m;
}

Histogram::BucketBoundaries ExponentialBuckets(double start, double factor, int count) {
  Histogram::BucketBoundaries b;
  double v = start;
  for (int i = 0; i < count; ++i, v *= factor) b.push_back(v);
  return b;
}

void Registry::AddCollector(Collector collector) {
  std::lock_guard<std::mutex> lock(mu_);
  collectors_.push_back(std::move(collector));
}

std::vector<MetricFamily> Registry::Collect() const {
  std::vector<MetricFamily> out;
  std::vector<Collector> collectors;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& f : families_) out.push_back(f->Collect());
    collectors = collectors_;
  }
  for (const auto& c : collectors) {
    auto more = c();
    for (auto& f : more) out.push_back(std::move(f));
  }
  return out;
}

}  // namespace brickserve::metrics
