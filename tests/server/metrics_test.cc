// The metrics module: counters, gauges and histograms with labels, their exposition text (checked
// line by line against the Prometheus text format), and updates from many threads.
#include <thread>

#include "gmock/gmock.h"
#include "server/metrics/metrics.h"
#include "server/metrics/text_serializer.h"

namespace brickserve::metrics {
namespace {

TEST(Metrics, ExpositionTextOfEachType) {
  Registry registry;
  auto& requests = BuildCounter().Name("app_requests_total").Help("Requests.").Register(registry);
  requests.Add({{"method", "Generate"}, {"code", "OK"}}).Increment();
  requests.Add({{"method", "Generate"}, {"code", "OK"}}).Increment(2);  // the same series
  requests.Add({{"method", "Score"}, {"code", "INVALID_ARGUMENT"}}).Increment();
  BuildGauge().Name("app_queue").Help("Queue.").Labels({{"pool", "a"}}).Register(registry).Add({}).Set(-1.5);
  auto& latency = BuildHistogram().Name("app_latency_seconds").Help("Latency.").Register(registry);
  auto& h = latency.Add({}, Histogram::BucketBoundaries{0.1, 1});
  h.Observe(0.1);  // a bucket includes its upper bound
  h.Observe(0.5);
  h.Observe(7);
  BuildCounter().Name("app_unused_total").Help("No series yet.").Register(registry);

  EXPECT_EQ(SerializeText(registry.Collect()),
            "# HELP app_requests_total Requests.\n"
            "# TYPE app_requests_total counter\n"
            "app_requests_total{code=\"INVALID_ARGUMENT\",method=\"Score\"} 1\n"
            "app_requests_total{code=\"OK\",method=\"Generate\"} 3\n"
            "# HELP app_queue Queue.\n"
            "# TYPE app_queue gauge\n"
            "app_queue{pool=\"a\"} -1.5\n"
            "# HELP app_latency_seconds Latency.\n"
            "# TYPE app_latency_seconds histogram\n"
            "app_latency_seconds_bucket{le=\"0.1\"} 1\n"
            "app_latency_seconds_bucket{le=\"1\"} 2\n"
            "app_latency_seconds_bucket{le=\"+Inf\"} 3\n"
            "app_latency_seconds_sum 7.6\n"
            "app_latency_seconds_count 3\n");
}

TEST(Metrics, EscapesHelpAndLabelValues) {
  Registry registry;
  BuildGauge()
      .Name("app_info")
      .Help("A \\ help\nline.")
      .Register(registry)
      .Add({{"path", "C:\\dir \"x\"\nnext"}})
      .Set(1);
  EXPECT_EQ(SerializeText(registry.Collect()),
            "# HELP app_info A \\\\ help\\nline.\n"
            "# TYPE app_info gauge\n"
            "app_info{path=\"C:\\\\dir \\\"x\\\"\\nnext\"} 1\n");
}

TEST(Metrics, CollectorsAddFamiliesAtScrapeTime) {
  Registry registry;
  int scrapes = 0;
  registry.AddCollector([&] {
    ++scrapes;
    ClientMetric m;
    m.value = scrapes;
    return std::vector<MetricFamily>{{"app_scrapes_total", "Scrapes.", MetricType::kCounter, {m}}};
  });
  EXPECT_THAT(SerializeText(registry.Collect()), ::testing::HasSubstr("app_scrapes_total 1\n"));
  EXPECT_THAT(SerializeText(registry.Collect()), ::testing::HasSubstr("app_scrapes_total 2\n"));
}

TEST(Metrics, ConcurrentUpdatesAreAllCounted) {
  Registry registry;
  auto& counter = BuildCounter().Name("app_total").Help("x").Register(registry);
  auto& histogram = BuildHistogram().Name("app_seconds").Help("x").Register(registry);
  constexpr int kThreads = 4, kEach = 20000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        counter.Add({{"thread", std::to_string(t % 2)}}).Increment();
        histogram.Add({}, ExponentialBuckets(0.001, 10, 4)).Observe(i % 2 == 0 ? 0.0005 : 5.0);
      }
    });
  }
  for (auto& t : threads) t.join();
  const auto families = registry.Collect();
  ASSERT_EQ(families.size(), 2u);
  double total = 0;
  for (const auto& m : families[0].metrics) total += m.value;
  EXPECT_EQ(total, kThreads * kEach);
  const ClientMetric& h = families[1].metrics.at(0);
  EXPECT_EQ(h.sample_count, static_cast<uint64_t>(kThreads * kEach));
  EXPECT_EQ(h.buckets.front().second, static_cast<uint64_t>(kThreads * kEach / 2));  // le 0.001
  // Summed in whatever order the threads ran: equal up to rounding.
  EXPECT_NEAR(h.sample_sum, kThreads * kEach / 2 * (0.0005 + 5.0), 1e-6);
}

TEST(MetricsDeathTest, InvalidNamesAreProgrammingErrors) {
  Registry registry;
  EXPECT_DEATH(BuildCounter().Name("9lives").Help("x").Register(registry), "invalid metric name");
  auto& f = BuildGauge().Name("ok_name").Help("x").Register(registry);
  EXPECT_DEATH(f.Add({{"bad-label", "v"}}), "invalid label name");
  EXPECT_DEATH(f.Add({{"__reserved", "v"}}), "invalid label name");
}

}  // namespace
}  // namespace brickserve::metrics
