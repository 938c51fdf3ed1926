// LatencyHistogram: Prometheus bucket semantics (an observation on a bound counts in that bucket)
// and the quantile GetServerStats reports (the upper bound of the bucket holding it).
#include "engine/serving/engine_stats.h"

#include <algorithm>

#include "gtest/gtest.h"

namespace brickserve {
namespace {

TEST(LatencyHistogram, BucketsIncludeTheirUpperBoundAndQuantilesAreBucketBounds) {
  LatencyHistogram h;
  EXPECT_EQ(h.Get().Quantile(0.5), 0);  // empty
  for (int i = 0; i < 98; ++i) h.Observe(0.02);  // (0.01, 0.025]
  h.Observe(0.025);                              // on the bound: same bucket
  h.Observe(1000);                               // beyond every bound: +Inf
  const auto s = h.Get();
  EXPECT_EQ(s.count, 100u);
  EXPECT_DOUBLE_EQ(s.sum, 98 * 0.02 + 0.025 + 1000);
  const size_t b = std::find(LatencyHistogram::kBounds.begin(), LatencyHistogram::kBounds.end(), 0.025) -
                   LatencyHistogram::kBounds.begin();
  EXPECT_EQ(s.counts[b], 99u);
  EXPECT_EQ(s.counts.back(), 1u);
  EXPECT_EQ(s.Quantile(0.5), 0.025);
  EXPECT_EQ(s.Quantile(0.99), 0.025);
  EXPECT_EQ(s.Quantile(1.0), LatencyHistogram::kBounds.back());  // only "above the last bound" is known
}

TEST(LatencyHistogram, BoundsIncrease) {
  const auto& b = LatencyHistogram::kBounds;
  for (size_t i = 1; i < b.size(); ++i) EXPECT_LT(b[i - 1], b[i]) << i;
}

}  // namespace
}  // namespace brickserve
