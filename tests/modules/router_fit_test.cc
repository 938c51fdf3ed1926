#include "engine/modules/router_fit.h"

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

// Independent reference: the same ridge problem written out as normal equations over the
// augmented x = [x, 1] and solved by Gaussian elimination with partial pivoting, all in double.
// Returns [in + 1, out]: rows 0..in-1 the weights (transposed), row `in` the bias.
std::vector<double> ReferenceRidge(const std::vector<float>& x, const std::vector<float>& y,
                                   int64_t rows, int in, int out, double lambda) {
  const int p = in + 1;
  std::vector<double> a(p * p, 0.0), b(p * out, 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<double> xa(p, 1.0);
    for (int i = 0; i < in; ++i) xa[i] = x[r * in + i];
    for (int i = 0; i < p; ++i) {
      for (int j = 0; j < p; ++j) a[i * p + j] += xa[i] * xa[j];
      for (int o = 0; o < out; ++o) b[i * out + o] += xa[i] * y[r * out + o];
    }
  }
  double mean_diag = 0;
  for (int i = 0; i < in; ++i) mean_diag += a[i * p + i];
  mean_diag /= in;
  for (int i = 0; i < in; ++i) a[i * p + i] += lambda * mean_diag;
  for (int col = 0; col < p; ++col) {
    int pivot = col;
    for (int r = col + 1; r < p; ++r) {
      if (std::fabs(a[r * p + col]) > std::fabs(a[pivot * p + col])) pivot = r;
    }
    for (int j = 0; j < p; ++j) std::swap(a[col * p + j], a[pivot * p + j]);
    for (int o = 0; o < out; ++o) std::swap(b[col * out + o], b[pivot * out + o]);
    for (int r = 0; r < p; ++r) {
      if (r == col) continue;
      const double f = a[r * p + col] / a[col * p + col];
      for (int j = 0; j < p; ++j) a[r * p + j] -= f * a[col * p + j];
      for (int o = 0; o < out; ++o) b[r * out + o] -= f * b[col * out + o];
    }
  }
  for (int i = 0; i < p; ++i) {
    for (int o = 0; o < out; ++o) b[i * out + o] /= a[i * p + i];
  }
  return b;
}

// y = W x + b computed in double, stored as float.
std::vector<float> ApplyMap(const std::vector<float>& x, int64_t rows, int in, int out,
                            const std::vector<float>& w, const std::vector<float>& bias) {
  std::vector<float> y(rows * out);
  for (int64_t r = 0; r < rows; ++r) {
    for (int o = 0; o < out; ++o) {
      double s = bias[o];
      for (int i = 0; i < in; ++i) s += double(w[o * in + i]) * x[r * in + i];
      y[r * out + o] = static_cast<float>(s);
    }
  }
  return y;
}

TEST(RidgeAccumulator, RecoversKnownLinearMapAndBias) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(testing::Message() << "seed=" << seed);
  std::mt19937_64 rng(seed);
  const int in = 12, out = 5;
  const int64_t rows = 300;
  const std::vector<float> w = Gaussian(rng, out * in);
  const std::vector<float> bias = Gaussian(rng, out, 0.0f, 3.0f);
  const std::vector<float> x = Gaussian(rng, rows * in, 0.5f);  // non-zero mean: bias and w mix
  const std::vector<float> y = ApplyMap(x, rows, in, out, w, bias);

  RidgeAccumulator acc(in, out);
  acc.Add(x.data(), y.data(), rows);
  EXPECT_EQ(acc.rows(), rows);
  auto router = acc.Solve(1e-12);
  ASSERT_TRUE(router.ok()) << router.status();
  ASSERT_EQ(router->in, in);
  ASSERT_EQ(router->out, out);
  ASSERT_EQ(router->weight.size(), w.size());
  ASSERT_EQ(router->bias.size(), bias.size());
  // Tolerance 1e-4 absolute; the only error source is y's float rounding (~1e-7 relative).
  for (size_t i = 0; i < w.size(); ++i) {
    EXPECT_NEAR(router->weight[i], w[i], 1e-4) << "weight " << i;
  }
  for (int o = 0; o < out; ++o) EXPECT_NEAR(router->bias[o], bias[o], 1e-4) << "bias " << o;

  // Scores() applies exactly this map (tolerance 1e-4 for float accumulation over 12 terms).
  std::vector<float> scores(out);
  for (int64_t r = 0; r < 5; ++r) {
    router->Scores(x.data() + r * in, scores.data());
    for (int o = 0; o < out; ++o) EXPECT_NEAR(scores[o], y[r * out + o], 1e-4) << "row " << r;
  }
}

TEST(RidgeAccumulator, ChunkedAddEqualsOneAdd) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(testing::Message() << "seed=" << seed);
  std::mt19937_64 rng(seed);
  const int in = 37, out = 6;  // odd sizes: exercise every vector tail
  const int64_t rows = 257;    // not a multiple of the 64-row tile or the 4-row group
  const std::vector<float> x = Gaussian(rng, rows * in, 0.2f);
  const std::vector<float> y = Gaussian(rng, rows * out);

  RidgeAccumulator whole(in, out);
  whole.Add(x.data(), y.data(), rows);
  RidgeAccumulator chunked(in, out);
  int64_t done = 0;
  std::uniform_int_distribution<int64_t> chunk(0, 70);  // 0-row chunks included
  while (done < rows) {
    const int64_t c = std::min(chunk(rng), rows - done);
    chunked.Add(x.data() + done * in, y.data() + done * out, c);
    done += c;
  }
  EXPECT_EQ(chunked.rows(), whole.rows());
  auto a = whole.Solve(1e-3);
  auto b = chunked.Solve(1e-3);
  ASSERT_TRUE(a.ok() && b.ok());
  // Each sum adds its rows in row order whatever the chunking, so the results agree to the float
  // (EXPECT_FLOAT_EQ: within 4 ulps).
  for (size_t i = 0; i < a->weight.size(); ++i) EXPECT_FLOAT_EQ(a->weight[i], b->weight[i]) << i;
  for (int o = 0; o < out; ++o) EXPECT_FLOAT_EQ(a->bias[o], b->bias[o]) << o;
}

TEST(RidgeAccumulator, MatchesIndependentNormalEquationsSolve) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(testing::Message() << "seed=" << seed);
  std::mt19937_64 rng(seed);
  const int in = 9, out = 4;
  const int64_t rows = 40;  // few rows, noisy targets: the ridge term visibly changes the answer
  const std::vector<float> x = Gaussian(rng, rows * in, 1.0f);
  const std::vector<float> y = Gaussian(rng, rows * out, -2.0f);
  RidgeAccumulator acc(in, out);
  acc.Add(x.data(), y.data(), rows);

  double max_lambda_effect = 0;
  std::vector<double> unregularised;
  for (double lambda : {0.0, 0.05, 1.0}) {
    SCOPED_TRACE(testing::Message() << "lambda=" << lambda);
    auto router = acc.Solve(lambda);
    ASSERT_TRUE(router.ok()) << router.status();
    const std::vector<double> ref = ReferenceRidge(x, y, rows, in, out, lambda);
    // Tolerance: 1e-5 * max(1, |ref|), the float rounding of the result plus solver differences.
    for (int o = 0; o < out; ++o) {
      for (int i = 0; i < in; ++i) {
        const double r = ref[i * out + o];
        EXPECT_NEAR(router->weight[o * in + i], r, 1e-5 * std::max(1.0, std::fabs(r)))
            << "o=" << o << " i=" << i;
      }
      const double rb = ref[in * out + o];
      EXPECT_NEAR(router->bias[o], rb, 1e-5 * std::max(1.0, std::fabs(rb))) << "bias o=" << o;
    }
    if (lambda == 0.0) {
      unregularised = ref;
    } else {
      for (size_t j = 0; j < ref.size(); ++j) {
        max_lambda_effect = std::max(max_lambda_effect, std::fabs(ref[j] - unregularised[j]));
      }
    }
  }
  EXPECT_GT(max_lambda_effect, 1e-2) << "the test data must make the ridge term matter";
}

TEST(RidgeAccumulator, Errors) {
  RidgeAccumulator empty(4, 2);
  EXPECT_EQ(empty.rows(), 0);
  auto r = empty.Solve();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();

  // x identically zero: XᵀX is zero and so is the scaled ridge term.
  std::vector<float> x(20 * 4, 0.0f), y(20 * 2, 1.0f);
  RidgeAccumulator zero(4, 2);
  zero.Add(x.data(), y.data(), 20);
  r = zero.Solve(1e-3);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();

  // Two equal columns and no ridge: singular. With a ridge it is solvable.
  std::mt19937_64 rng(7);
  std::vector<float> g = Gaussian(rng, 20 * 4);
  for (int64_t row = 0; row < 20; ++row) g[row * 4 + 3] = g[row * 4 + 1];
  RidgeAccumulator dup(4, 2);
  dup.Add(g.data(), y.data(), 20);
  r = dup.Solve(0.0);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
  EXPECT_TRUE(dup.Solve(1e-3).ok());

  EXPECT_EQ(dup.Solve(-1.0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(dup.Solve(std::numeric_limits<double>::quiet_NaN()).status().code(),
            absl::StatusCode::kInvalidArgument);
  RidgeAccumulator bad(0, 2);
  bad.Add(g.data(), y.data(), 20);  // ignored
  EXPECT_EQ(bad.Solve().status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(CentroidRouter, MatchesBruteForceMeanOfNormalisedVectors) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(testing::Message() << "seed=" << seed);
  std::mt19937_64 rng(seed);
  const int64_t d_ff = 48, in = 10;
  const int modules = 6;
  std::vector<float> v = Gaussian(rng, d_ff * in);
  // Wildly different norms (only direction may count) and one zero vector.
  std::uniform_real_distribution<float> log_scale(-3.0f, 3.0f);
  for (int64_t n = 0; n < d_ff; ++n) {
    const float s = std::pow(10.0f, log_scale(rng));
    for (int64_t i = 0; i < in; ++i) v[n * in + i] *= s;
  }
  const int64_t zero_neuron = std::uniform_int_distribution<int64_t>(0, d_ff - 1)(rng);
  std::fill_n(v.begin() + zero_neuron * in, in, 0.0f);
  std::vector<int32_t> assignment(d_ff);
  for (int64_t n = 0; n < d_ff; ++n) assignment[n] = static_cast<int32_t>(n % modules);
  std::shuffle(assignment.begin(), assignment.end(), rng);

  const LinearRouter router = CentroidRouter(v, d_ff, in, assignment, modules);
  ASSERT_EQ(router.in, in);
  ASSERT_EQ(router.out, modules);
  ASSERT_EQ(router.weight.size(), size_t(modules * in));
  EXPECT_EQ(router.bias, std::vector<float>(modules, 0.0f));
  for (int m = 0; m < modules; ++m) {
    std::vector<double> mean(in, 0.0);
    int count = 0;
    for (int64_t n = 0; n < d_ff; ++n) {
      if (assignment[n] != m) continue;
      ++count;
      double norm = 0;
      for (int64_t i = 0; i < in; ++i) norm += double(v[n * in + i]) * v[n * in + i];
      norm = std::sqrt(norm);
      if (norm == 0) continue;
      for (int64_t i = 0; i < in; ++i) mean[i] += v[n * in + i] / norm;
    }
    for (int64_t i = 0; i < in; ++i) {
      // Entries are at most 1 in magnitude; tolerance 1e-6 absolute (float rounding).
      EXPECT_NEAR(router.weight[m * in + i], mean[i] / count, 1e-6) << "m=" << m << " i=" << i;
    }
  }
  // Score of a module is its centroid · x.
  const std::vector<float> x = Gaussian(rng, in);
  std::vector<float> scores(modules);
  router.Scores(x.data(), scores.data());
  for (int m = 0; m < modules; ++m) {
    double s = 0;
    for (int64_t i = 0; i < in; ++i) s += double(router.weight[m * in + i]) * x[i];
    EXPECT_NEAR(scores[m], s, 1e-5);
  }
}

TEST(TopKMassRecall, PerfectWhenScoresAreTheMass) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(testing::Message() << "seed=" << seed);
  std::mt19937_64 rng(seed);
  const int64_t rows = 50;
  const int modules = 16;
  std::vector<float> mass = Gaussian(rng, rows * modules);
  for (float& m : mass) m = std::fabs(m);
  for (int k : {1, 4, 15}) EXPECT_NEAR(TopKMassRecall(mass, mass, rows, modules, k), 1.0, 1e-12);
}

TEST(TopKMassRecall, HandComputedExample) {
  const int modules = 4;
  const std::vector<float> scores = {
      0.1f, 0.0f, 0.9f, 0.2f,  // router picks 2, 3
      5.0f, 5.0f, 5.0f, 0.0f,  // three-way tie: lower ids 0, 1 win
      1.0f, 2.0f, 3.0f, 4.0f,  // zero-mass row: skipped
  };
  const std::vector<float> mass = {
      0.5f, 0.3f, 0.2f, 0.0f,  // got 0.2 + 0.0, best 0.5 + 0.3 -> 0.25
      1.0f, 2.0f, 3.0f, 4.0f,  // got 1 + 2, best 4 + 3 -> 3/7
      0.0f, 0.0f, 0.0f, 0.0f,
  };
  EXPECT_NEAR(TopKMassRecall(scores, mass, 3, modules, 2), (0.25 + 3.0 / 7.0) / 2.0, 1e-7);
  // k = 1: row 0 picks module 2 (0.2 of 0.5), row 1 picks module 0 (1 of 4).
  EXPECT_NEAR(TopKMassRecall(scores, mass, 3, modules, 1), (0.4 + 0.25) / 2.0, 1e-7);
  // All rows skipped: nothing to miss.
  const std::vector<float> zeros(12, 0.0f);
  EXPECT_EQ(TopKMassRecall(scores, zeros, 3, modules, 2), 1.0);
  // NaN scores rank last.
  const std::vector<float> nan_scores = {std::numeric_limits<float>::quiet_NaN(), 0.0f, -1.0f,
                                         -2.0f};
  const std::vector<float> one_row = {10.0f, 1.0f, 0.0f, 0.0f};
  EXPECT_NEAR(TopKMassRecall(nan_scores, one_row, 1, modules, 1), 0.1, 1e-7);
}

TEST(TopKMassRecall, AllModulesIsPerfectAndBadShapesAreNaN) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(testing::Message() << "seed=" << seed);
  std::mt19937_64 rng(seed);
  const int64_t rows = 20;
  const int modules = 7;
  const std::vector<float> scores = Gaussian(rng, rows * modules);
  std::vector<float> mass = Gaussian(rng, rows * modules);
  for (float& m : mass) m = std::fabs(m);
  EXPECT_NEAR(TopKMassRecall(scores, mass, rows, modules, modules), 1.0, 1e-12);
  EXPECT_NEAR(TopKMassRecall(scores, mass, rows, modules, modules + 5), 1.0, 1e-12);  // clamped
  const double partial = TopKMassRecall(scores, mass, rows, modules, 3);
  EXPECT_GT(partial, 0.0);
  EXPECT_LE(partial, 1.0 + 1e-12);

  EXPECT_TRUE(std::isnan(TopKMassRecall(scores, mass, rows + 1, modules, 3)));
  EXPECT_TRUE(std::isnan(TopKMassRecall(scores, mass, rows, 0, 3)));
  EXPECT_TRUE(
      std::isnan(TopKMassRecall(scores, std::span<const float>(mass).first(10), rows, modules, 3)));
}

}  // namespace
}  // namespace brickserve
