// A small Prometheus client: counters, gauges and histograms with labels, in families held by a
// registry, shaped like prometheus-cpp (which no reachable registry packages):
//
//   Registry registry;
//   auto& requests = BuildCounter().Name("app_requests_total").Help("Requests.").Register(registry);
//   requests.Add({{"method", "Generate"}, {"code", "OK"}}).Increment();
//   std::string body = SerializeText(registry.Collect());
//
// Updates are lock-free (atomics); Family::Add takes a mutex, so hot paths keep the reference it
// returns. Collectors add families computed at scrape time (e.g. from an engine snapshot).
// Metric and label names are fixed in code: an invalid one is a programming error and aborts.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace brickserve::metrics {

using Labels = std::map<std::string, std::string>;
enum class MetricType { kCounter, kGauge, kHistogram };

// One sample set of a family at collection time (the exposition format's view).
struct ClientMetric {
  Labels labels;
  double value = 0;  // counter, gauge
  // Histogram: cumulative counts per upper bound, the last bound +Inf.
  std::vector<std::pair<double, uint64_t>> buckets;
  uint64_t sample_count = 0;
  double sample_sum = 0;
};

struct MetricFamily {
  std::string name, help;
  MetricType type = MetricType::kGauge;
  std::vector<ClientMetric> metrics;
};

class Counter {
 public:
  void Increment(double v = 1.0) { value_.fetch_add(v, std::memory_order_relaxed); }  // v >= 0
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

class Gauge {
 public:
  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  void Increment(double v = 1.0) { value_.fetch_add(v, std::memory_order_relaxed); }
  void Decrement(double v = 1.0) { value_.fetch_sub(v, std::memory_order_relaxed); }
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

class Histogram {
 public:
  using BucketBoundaries = std::vector<double>;
  // Strictly increasing finite upper bounds; +Inf is implicit.
  explicit Histogram(BucketBoundaries bounds);
  void Observe(double v);
  ClientMetric Collect() const;

 private:
  const BucketBoundaries bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // per bucket (not cumulative), last = +Inf
  std::atomic<double> sum_{0};
};

// Bucket bounds 'start, start * factor, ...' (count of them), as prometheus::Histogram users build.
Histogram::BucketBoundaries ExponentialBuckets(double start, double factor, int count);

class FamilyBase {
 public:
  virtual ~FamilyBase() = default;
  virtual MetricFamily Collect() const = 0;
};

template <typename T>
class Family : public FamilyBase {
 public:
  Family(std::string name, std::string help, Labels constant_labels, MetricType type)
      : name_(std::move(name)), help_(std::move(help)), constant_(std::move(constant_labels)), type_(type) {}

  // The metric with these labels (created on first use; the same object afterwards). Extra
  // arguments go to T's constructor (a histogram's bucket bounds).
  template <typename... Args>
  T& Add(const Labels& labels, Args&&... args);
  MetricFamily Collect() const override;

 private:
  const std::string name_, help_;
  const Labels constant_;
  const MetricType type_;
  mutable std::mutex mu_;
  std::map<Labels, std::unique_ptr<T>> metrics_;
};

class Registry {
 public:
  using Collector = std::function<std::vector<MetricFamily>()>;

  template <typename T>
  Family<T>& Add(std::string name, std::string help, Labels constant_labels, MetricType type) {
    auto family = std::make_unique<Family<T>>(std::move(name), std::move(help), std::move(constant_labels), type);
    Family<T>& ref = *family;
    std::lock_guard<std::mutex> lock(mu_);
    families_.push_back(std::move(family));
    return ref;
  }
  // `collector` runs on every Collect (the scraping thread) and must be thread-safe.
  void AddCollector(Collector collector);
  std::vector<MetricFamily> Collect() const;

 private:
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<FamilyBase>> families_;
  std::vector<Collector> collectors_;
};

template <typename T>
class Builder {
 public:
  explicit Builder(MetricType type) : type_(type) {}
  Builder& Name(std::string name) {
    name_ = std::move(name);
    return *this;
  }
  Builder& Help(std::string help) {
    help_ = std::move(help);
    return *this;
  }
  Builder& Labels(metrics::Labels labels) {
    labels_ = std::move(labels);
    return *this;
  }
  Family<T>& Register(Registry& registry);

 private:
  MetricType type_;
  std::string name_, help_;
  metrics::Labels labels_;
};

inline Builder<Counter> BuildCounter() { return Builder<Counter>(MetricType::kCounter); }
inline Builder<Gauge> BuildGauge() { return Builder<Gauge>(MetricType::kGauge); }
inline Builder<Histogram> BuildHistogram() { return Builder<Histogram>(MetricType::kHistogram); }

// Aborts with a message unless `name` is a valid metric (or, with `label`, label) name.
void CheckName(const std::string& name, bool label);

// ---- template definitions ----

template <typename T>
template <typename... Args>
T& Family<T>::Add(const metrics::Labels& labels, Args&&... args) {
  for (const auto& [k, v] : labels) CheckName(k, /*label=*/true);
  std::lock_guard<std::mutex> lock(mu_);
  auto it = metrics_.find(labels);
  if (it == metrics_.end()) it = metrics_.emplace(labels, std::make_unique<T>(std::forward<Args>(args)...)).first;
  return *it->second;
}

template <typename T>
MetricFamily Family<T>::Collect() const {
  MetricFamily f{name_, help_, type_, {}};
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [labels, metric] : metrics_) {
    ClientMetric m;
    if constexpr (std::is_same_v<T, Histogram>) {
      m = metric->Collect();
    } else {
      m.value = metric->Value();
    }
    m.labels = constant_;
    m.labels.insert(labels.begin(), labels.end());
    f.metrics.push_back(std::move(m));
  }
  return f;
}

template <typename T>
Family<T>& Builder<T>::Register(Registry& registry) {
  CheckName(name_, /*label=*/false);
  for (const auto& [k, v] : labels_) CheckName(k, /*label=*/true);
  return registry.Add<T>(name_, help_, labels_, type_);
}

}  // namespace brickserve::metrics
