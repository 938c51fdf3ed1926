#include "engine/modules/balanced_kmeans.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/modules/random_inputs.h"

namespace brickserve {
namespace {

using test_inputs::FreshSeed;
using test_inputs::Gaussian;

std::vector<int64_t> ClusterSizes(const std::vector<int32_t>& ids, int k) {
  std::vector<int64_t> sizes(k, 0);
  for (int32_t id : ids) {
    EXPECT_GE(id, 0);
    EXPECT_LT(id, k);
    if (id >= 0 && id < k) ++sizes[id];
  }
  return sizes;
}

// True when `found` equals `truth` up to a relabelling (a bijection between the labels).
bool SamePartition(const std::vector<int32_t>& found, const std::vector<int32_t>& truth, int k) {
  std::vector<int32_t> to_truth(k, -1), to_found(k, -1);
  for (size_t i = 0; i < found.size(); ++i) {
    const int32_t f = found[i], t = truth[i];
    if (to_truth[f] == -1 && to_found[t] == -1) {
      to_truth[f] = t;
      to_found[t] = f;
    } else if (to_truth[f] != t || to_found[t] != f) {
      return false;
    }
  }
  return true;
}

// Largest cosine between two of k unit rows.
double MaxPairCosine(const std::vector<float>& unit_rows, int k, int dim) {
  double best = -1;
  for (int a = 0; a < k; ++a) {
    for (int b = a + 1; b < k; ++b) {
      double dot = 0;
      for (int d = 0; d < dim; ++d) dot += double(unit_rows[a * dim + d]) * unit_rows[b * dim + d];
      best = std::max(best, dot);
    }
  }
  return best;
}

// Sum over points of the cosine between the point and its cluster's mean direction: the cosine
// k-means objective, computed independently in double.
double WithinClusterCosine(const std::vector<float>& pts, int64_t n, int64_t dim,
                           const std::vector<int32_t>& ids, int k) {
  std::vector<double> unit(pts.size());
  for (int64_t i = 0; i < n; ++i) {
    double ss = 0;
    for (int64_t d = 0; d < dim; ++d) ss += double(pts[i * dim + d]) * pts[i * dim + d];
    for (int64_t d = 0; d < dim; ++d) unit[i * dim + d] = pts[i * dim + d] / std::sqrt(ss);
  }
  std::vector<double> mean(k * dim, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t d = 0; d < dim; ++d) mean[ids[i] * dim + d] += unit[i * dim + d];
  }
  for (int c = 0; c < k; ++c) {
    double ss = 0;
    for (int64_t d = 0; d < dim; ++d) ss += mean[c * dim + d] * mean[c * dim + d];
    for (int64_t d = 0; d < dim; ++d) mean[c * dim + d] /= std::sqrt(ss);
  }
  double total = 0;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t d = 0; d < dim; ++d) total += unit[i * dim + d] * mean[ids[i] * dim + d];
  }
  return total;
}

TEST(BalancedKMeans, EveryClusterGetsExactlyNOverK) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(testing::Message() << "seed=" << seed);
  std::mt19937_64 rng(seed);
  struct Case {
    int64_t n, dim;
    int k;
  };
  for (const Case& c : {Case{96, 7, 1}, Case{96, 7, 2}, Case{96, 7, 3}, Case{96, 7, 8},
                        Case{96, 7, 96}, Case{60, 5, 12}, Case{704, 16, 22}, Case{45, 1, 9}}) {
    for (bool normalize : {true, false}) {
      for (int iterations : {1, 20}) {
        SCOPED_TRACE(testing::Message()
                     << "n=" << c.n << " dim=" << c.dim << " k=" << c.k
                     << " normalize=" << normalize << " iterations=" << iterations);
        const std::vector<float> pts = Gaussian(rng, c.n * c.dim);
        BalancedKMeansOptions options;
        options.normalize = normalize;
        options.iterations = iterations;
        options.seed = rng();
        auto ids = BalancedKMeans(pts, c.n, c.dim, c.k, options);
        ASSERT_TRUE(ids.ok()) << ids.status();
        ASSERT_EQ(static_cast<int64_t>(ids->size()), c.n);
        for (int64_t size : ClusterSizes(*ids, c.k)) EXPECT_EQ(size, c.n / c.k);
      }
    }
  }
}

TEST(BalancedKMeans, DegenerateInputsStillBalanced) {
  // Identical points (k-means++ has no distance to sample by) and zero vectors (no direction).
  for (bool normalize : {true, false}) {
    SCOPED_TRACE(testing::Message() << "normalize=" << normalize);
    BalancedKMeansOptions options;
    options.normalize = normalize;
    for (float value : {0.0f, 0.5f}) {
      const std::vector<float> pts(32 * 4, value);
      auto ids = BalancedKMeans(pts, 32, 4, 8, options);
      ASSERT_TRUE(ids.ok()) << ids.status();
      for (int64_t size : ClusterSizes(*ids, 8)) EXPECT_EQ(size, 4);
    }
    auto empty = BalancedKMeans({}, 0, 4, 3, options);
    ASSERT_TRUE(empty.ok()) << empty.status();
    EXPECT_TRUE(empty->empty());
  }
}

// Well-separated planted clusters of equal size, shuffled: the result must be exactly the planted
// partition up to relabelling. Separation: planted centres are random unit directions with
// pairwise cosine <= 0.8 (angle >= 0.64 rad), noise per coordinate 0.01 (angle <= ~0.12 rad at
// dim 128), so every point is far closer to its own centre than to any other. Euclidean mode: the
// same centres times 10, noise 0.01.
TEST(BalancedKMeans, RecoversPlantedClusters) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(testing::Message() << "seed=" << seed);
  std::mt19937_64 rng(seed);
  struct Case {
    int k, per, dim;
  };
  for (const Case& c : {Case{8, 16, 32}, Case{16, 8, 64}, Case{4, 25, 8}, Case{22, 32, 128}}) {
    for (bool normalize : {true, false}) {
      SCOPED_TRACE(testing::Message() << "k=" << c.k << " per=" << c.per << " dim=" << c.dim
                                      << " normalize=" << normalize);
      const int64_t n = int64_t{c.k} * c.per;
      // Cosine mode: each point is also scaled by a random factor in [0.5, 2] (only direction
      // counts).
      std::vector<float> centres;
      // Resampled until no two centres have cosine above 0.8 (rare in low dimension), so that
      // "well separated" holds for every seed.
      do {
        centres = Gaussian(rng, size_t(c.k) * c.dim);
        for (int m = 0; m < c.k; ++m) {
          double ss = 0;
          for (int d = 0; d < c.dim; ++d) {
            ss += double(centres[m * c.dim + d]) * centres[m * c.dim + d];
          }
          for (int d = 0; d < c.dim; ++d) centres[m * c.dim + d] /= float(std::sqrt(ss));
        }
      } while (MaxPairCosine(centres, c.k, c.dim) > 0.8);
      if (!normalize) {
        for (float& x : centres) x *= 10.0f;
      }
      std::vector<int32_t> truth(n);
      for (int64_t i = 0; i < n; ++i) truth[i] = static_cast<int32_t>(i % c.k);
      std::shuffle(truth.begin(), truth.end(), rng);
      std::vector<float> pts = Gaussian(rng, size_t(n) * c.dim, 0.0f, 0.01f);
      std::uniform_real_distribution<float> scale(0.5f, 2.0f);
      for (int64_t i = 0; i < n; ++i) {
        const float s = normalize ? scale(rng) : 1.0f;
        for (int d = 0; d < c.dim; ++d) {
          pts[i * c.dim + d] = s * (centres[truth[i] * c.dim + d] + pts[i * c.dim + d]);
        }
      }
      BalancedKMeansOptions options;
      options.normalize = normalize;
      options.seed = rng();
      SCOPED_TRACE(testing::Message() << "options.seed=" << options.seed);
      auto ids = BalancedKMeans(pts, n, c.dim, c.k, options);
      ASSERT_TRUE(ids.ok()) << ids.status();
      for (int64_t size : ClusterSizes(*ids, c.k)) EXPECT_EQ(size, c.per);
      EXPECT_TRUE(SamePartition(*ids, truth, c.k));
    }
  }
}

TEST(BalancedKMeans, DeterministicForASeed) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(testing::Message() << "seed=" << seed);
  std::mt19937_64 rng(seed);
  const int64_t n = 352, dim = 24;
  const int k = 11;
  const std::vector<float> pts = Gaussian(rng, n * dim);
  for (bool normalize : {true, false}) {
    BalancedKMeansOptions options;
    options.normalize = normalize;
    options.seed = rng();
    auto a = BalancedKMeans(pts, n, dim, k, options);
    const std::vector<float> copy = pts;  // another buffer, same values
    auto b = BalancedKMeans(copy, n, dim, k, options);
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(*a, *b) << "normalize=" << normalize;
  }
}

TEST(BalancedKMeans, RejectsBadArguments) {
  const std::vector<float> pts(10 * 3, 1.0f);
  auto expect_invalid = [](const absl::StatusOr<std::vector<int32_t>>& r,
                           std::vector<std::string> parts) {
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
    for (const std::string& p : parts) {
      EXPECT_NE(r.status().message().find(p), std::string::npos)
          << "message '" << r.status().message() << "' lacks '" << p << "'";
    }
  };
  expect_invalid(BalancedKMeans(pts, 10, 3, 0), {"k = 0", ">= 1"});
  expect_invalid(BalancedKMeans(pts, 10, 3, -3), {"k = -3", ">= 1"});
  expect_invalid(BalancedKMeans(pts, 10, 3, 4), {"n = 10", "k = 4"});
  expect_invalid(BalancedKMeans(pts, 10, 3, 20), {"n = 10", "k = 20"});
  expect_invalid(BalancedKMeans(std::span<const float>(pts).first(29), 10, 3, 5), {"29", "10 * 3"});
  expect_invalid(BalancedKMeans(pts, 11, 3, 11), {"30", "11 * 3"});
  expect_invalid(BalancedKMeans(pts, 10, 0, 5), {"dim = 0", ">= 1"});
  expect_invalid(BalancedKMeans(pts, -10, 3, 5), {"n = -10", ">= 0"});
  BalancedKMeansOptions zero_iterations;
  zero_iterations.iterations = 0;
  expect_invalid(BalancedKMeans(pts, 10, 3, 5, zero_iterations), {"iterations = 0", ">= 1"});
  std::vector<float> bad = pts;
  bad[3 * 4 + 1] = std::numeric_limits<float>::quiet_NaN();
  expect_invalid(BalancedKMeans(bad, 10, 3, 5), {"point 4", "dimension 1"});
  bad[3 * 4 + 1] = std::numeric_limits<float>::infinity();
  expect_invalid(BalancedKMeans(bad, 10, 3, 5), {"point 4"});
}

// The clustering objective must beat random balanced partitions by a wide margin. Data: points
// near a random 8-dimensional subspace of R^64 (structured like weight rows, not isotropic).
// Margin stated: mean cosine to own cluster direction at least 0.4 higher than the best of 10
// random balanced partitions, and at least three times as high (typically ~0.72 against ~0.19).
TEST(BalancedKMeans, BeatsRandomBalancedPartitions) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(testing::Message() << "seed=" << seed);
  std::mt19937_64 rng(seed);
  const int64_t n = 704, dim = 64, rank = 8;
  const int k = 22;
  const std::vector<float> basis = Gaussian(rng, rank * dim);
  std::vector<float> pts = Gaussian(rng, n * dim, 0.0f, 0.3f);
  for (int64_t i = 0; i < n; ++i) {
    const std::vector<float> z = Gaussian(rng, rank);
    for (int64_t d = 0; d < dim; ++d) {
      for (int64_t r = 0; r < rank; ++r) pts[i * dim + d] += z[r] * basis[r * dim + d];
    }
  }
  BalancedKMeansOptions options;
  options.seed = rng();
  auto ids = BalancedKMeans(pts, n, dim, k, options);
  ASSERT_TRUE(ids.ok()) << ids.status();
  const double ours = WithinClusterCosine(pts, n, dim, *ids, k) / n;

  double best_random = -1;
  std::vector<int32_t> random_ids(n);
  for (int64_t i = 0; i < n; ++i) random_ids[i] = static_cast<int32_t>(i % k);
  for (int trial = 0; trial < 10; ++trial) {
    std::shuffle(random_ids.begin(), random_ids.end(), rng);
    best_random = std::max(best_random, WithinClusterCosine(pts, n, dim, random_ids, k) / n);
  }
  EXPECT_GE(ours, best_random + 0.4) << "ours=" << ours << " best random=" << best_random;
  EXPECT_GE(ours, 3.0 * best_random) << "ours=" << ours << " best random=" << best_random;
}

// Rounding: exactly llround(top_fraction * d_ff) neurons per token (halves away from zero).
TEST(CoactivationFeatures, MarksTheRoundedTopFractionPerToken) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(testing::Message() << "seed=" << seed);
  std::mt19937_64 rng(seed);
  const int64_t tokens = 37, d_ff = 101;
  const std::vector<float> act = Gaussian(rng, tokens * d_ff);
  std::uniform_real_distribution<double> uni(0.0, 1.0);
  for (double fraction : {0.0, 0.004, 0.005, 0.1, 0.25, 0.5, 1.0, uni(rng), uni(rng)}) {
    SCOPED_TRACE(testing::Message() << "fraction=" << fraction);
    const int64_t expected = std::llround(fraction * d_ff);
    const std::vector<float> f = CoactivationFeatures(act, tokens, d_ff, fraction);
    ASSERT_EQ(static_cast<int64_t>(f.size()), d_ff * tokens);
    for (int64_t t = 0; t < tokens; ++t) {
      int64_t marked = 0;
      float min_marked = INFINITY, max_unmarked = -1;
      for (int64_t j = 0; j < d_ff; ++j) {
        const float mark = f[j * tokens + t];  // [d_ff, tokens] layout
        ASSERT_TRUE(mark == 0.0f || mark == 1.0f);
        const float a = std::fabs(act[t * d_ff + j]);
        if (mark == 1.0f) {
          ++marked;
          min_marked = std::min(min_marked, a);
        } else {
          max_unmarked = std::max(max_unmarked, a);
        }
      }
      EXPECT_EQ(marked, expected) << "token " << t;
      if (marked > 0 && marked < d_ff) {
        EXPECT_GE(min_marked, max_unmarked) << "token " << t;
      }
    }
  }
  // Exact halves round up: 2.5 -> 3.
  const std::vector<float> half(10, 1.0f);
  std::vector<float> f = CoactivationFeatures(half, 2, 5, 0.5);
  EXPECT_EQ(std::count(f.begin(), f.end(), 1.0f), 2 * 3);
  f = CoactivationFeatures(half, 1, 10, 0.25);
  EXPECT_EQ(std::count(f.begin(), f.end(), 1.0f), 3);
  // Out-of-range fractions are clamped.
  f = CoactivationFeatures(half, 2, 5, 1.5);
  EXPECT_EQ(std::count(f.begin(), f.end(), 1.0f), 10);
  f = CoactivationFeatures(half, 2, 5, -0.1);
  EXPECT_EQ(std::count(f.begin(), f.end(), 1.0f), 0);
}

TEST(CoactivationFeatures, HandExample) {
  // 2 tokens, 5 neurons, top 40% = 2 neurons per token.
  const std::vector<float> act = {
      0.1f, -3.0f, 2.0f,  0.5f, -0.2f,  // token 0: |.| largest at neurons 1, 2
      1.0f, 1.0f,  -1.0f, 0.0f, 0.5f,   // token 1: three-way tie at 1.0 -> lower ids 0, 1
  };
  const std::vector<float> f = CoactivationFeatures(act, 2, 5, 0.4);
  const std::vector<float> expected = {
      0, 1,  // neuron 0: token 1 only
      1, 1,  // neuron 1: both
      1, 0,  // neuron 2: token 0 only
      0, 0,  // neuron 3
      0, 0,  // neuron 4
  };
  EXPECT_EQ(f, expected);
  // A NaN activation ranks below every number.
  const std::vector<float> with_nan = {std::numeric_limits<float>::quiet_NaN(), 0.0f, -0.5f};
  EXPECT_EQ(CoactivationFeatures(with_nan, 1, 3, 2.0 / 3.0), (std::vector<float>{0, 1, 1}));
}

TEST(CoactivationFeatures, SizeMismatchGivesEmpty) {
  const std::vector<float> act(11, 1.0f);
  EXPECT_TRUE(CoactivationFeatures(act, 2, 5, 0.5).empty());
  EXPECT_TRUE(CoactivationFeatures(act, -1, 5, 0.5).empty());
  EXPECT_EQ(CoactivationFeatures({}, 0, 5, 0.5).size(), 0u);
  EXPECT_EQ(CoactivationFeatures({}, 3, 0, 0.5).size(), 0u);
}

}  // namespace
}  // namespace brickserve
