#include "engine/modules/router_fit.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/modules/simd4.h"

namespace brickserve {
namespace {

using simd4::Dot;

// Two doubles (SSE2 / NEON); the XᵀX update is written with it for the same reason. Lanes are
// independent entries, so the per-entry summation order is that of the scalar code.
typedef double D2 __attribute__((vector_size(16)));

inline D2 Load2(const double* p) {
  D2 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Best-first order of modules for top-k: higher score first, NaN last, ties to the lower id. A
// strict total order, so any (partial) sort gives the same answer.
struct ScoreOrder {
  const float* s;
  bool operator()(int a, int b) const {
    const bool na = std::isnan(s[a]), nb = std::isnan(s[b]);
    if (na != nb) return nb;
    if (!na && s[a] != s[b]) return s[a] > s[b];
    return a < b;
  }
};

}  // namespace

void LinearRouter::Scores(const float* x, float* scores) const {
  for (int o = 0; o < out; ++o) {
    scores[o] = bias[o] + Dot(weight.data() + static_cast<int64_t>(o) * in, x, in);
  }
}

RidgeAccumulator::RidgeAccumulator(int in, int out) : in_(in), out_(out) {
  if (in_ >= 1 && out_ >= 1) {
    const size_t p = static_cast<size_t>(in_) + 1;
    xtx_.assign(p * p, 0.0);
    xty_.assign(p * out_, 0.0);
  }
}

void RidgeAccumulator::Add(const float* x, const float* y, int64_t rows) {
  if (in_ < 1 || out_ < 1 || rows <= 0) return;
  const int64_t p = in_ + 1;
  // Rows are taken a tile at a time so that a row of XᵀX (p doubles) stays in L1 while the tile's
  // rows stream past it; one row at a time would re-read the whole p x p matrix per row.
  constexpr int64_t kTile = 64;
  std::vector<double> tile(static_cast<size_t>(kTile) * p);
  for (int64_t r0 = 0; r0 < rows; r0 += kTile) {
    const int64_t nr = std::min(kTile, rows - r0);
    for (int64_t r = 0; r < nr; ++r) {
      const float* xr = x + (r0 + r) * in_;
      double* t = tile.data() + r * p;
      for (int64_t i = 0; i < in_; ++i) t[i] = xr[i];
      t[in_] = 1.0;  // the constant input that carries the bias
    }
    // Upper triangle of XᵀX. Four rows per pass halve the loads and stores of the accumulator row;
    // the sum is still written ((acc + r0) + r1) + ..., so every entry adds its rows in row order
    // and the result does not depend on how rows were split between Add calls.
    for (int64_t i = 0; i < p; ++i) {
      double* acc = xtx_.data() + i * p;
      int64_t r = 0;
      for (; r + 4 <= nr; r += 4) {
        const double* t0 = tile.data() + r * p;
        const double* t1 = t0 + p;
        const double* t2 = t1 + p;
        const double* t3 = t2 + p;
        const double a0 = t0[i], a1 = t1[i], a2 = t2[i], a3 = t3[i];
        const D2 v0 = {a0, a0}, v1 = {a1, a1}, v2 = {a2, a2}, v3 = {a3, a3};
        int64_t j = i;
        for (; j + 2 <= p; j += 2) {
          const D2 sum = Load2(acc + j) + v0 * Load2(t0 + j) + v1 * Load2(t1 + j) +
                         v2 * Load2(t2 + j) + v3 * Load2(t3 + j);
          std::memcpy(acc + j, &sum, sizeof sum);
        }
        for (; j < p; ++j) acc[j] = acc[j] + a0 * t0[j] + a1 * t1[j] + a2 * t2[j] + a3 * t3[j];
      }
      for (; r < nr; ++r) {
        const double* t0 = tile.data() + r * p;
        const double a0 = t0[i];
        for (int64_t j = i; j < p; ++j) acc[j] = acc[j] + a0 * t0[j];
      }
    }
    // XᵀY, in row order for the same reason.
    for (int64_t r = 0; r < nr; ++r) {
      const double* t = tile.data() + r * p;
      const float* yr = y + (r0 + r) * out_;
      for (int64_t i = 0; i < p; ++i) {
        const double a = t[i];
        double* acc = xty_.data() + i * out_;
        for (int64_t o = 0; o < out_; ++o) acc[o] += a * yr[o];
      }
    }
  }
  rows_ += rows;
}

absl::StatusOr<LinearRouter> RidgeAccumulator::Solve(double lambda) const {
  if (in_ < 1 || out_ < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("RidgeAccumulator: in = ", in_, " and out = ", out_, " must both be >= 1"));
  }
  if (!(lambda >= 0) || !std::isfinite(lambda)) {
    return absl::InvalidArgumentError(
        absl::StrCat("RidgeAccumulator: lambda = ", lambda, " must be finite and >= 0"));
  }
  if (rows_ == 0) return absl::FailedPreconditionError("RidgeAccumulator: no rows were added");

  const int64_t p = in_ + 1;
  std::vector<double> u(xtx_);  // upper triangle; becomes the Cholesky factor U (A = UᵀU)
  double mean_diag = 0;
  for (int64_t i = 0; i < in_; ++i) mean_diag += u[i * p + i];
  mean_diag /= in_;
  // Scaled by the mean diagonal so that lambda means the same whatever the scale of x.
  const double ridge = lambda * mean_diag;
  for (int64_t i = 0; i < in_; ++i) u[i * p + i] += ridge;  // the bias (index in_) is not shrunk

  std::vector<double> diag(p);
  for (int64_t i = 0; i < p; ++i) diag[i] = u[i * p + i];
  // A pivot this small relative to its diagonal means the column is (numerically) a combination
  // of the earlier ones: the solution would be noise, so report it instead.
  constexpr double kRelativePivot = 1e-12;
  for (int64_t k = 0; k < p; ++k) {
    double* uk = u.data() + k * p;
    const double d = uk[k];
    if (!(d > kRelativePivot * diag[k])) {
      return absl::FailedPreconditionError(
          absl::StrCat("RidgeAccumulator: the system is not positive definite (pivot ", k, " of ",
                       p, " is ", d, " against diagonal ", diag[k], "; lambda = ", lambda,
                       ", rows = ", rows_, "); add rows or raise lambda"));
    }
    const double r = std::sqrt(d);
    uk[k] = r;
    const double inv = 1.0 / r;
    for (int64_t j = k + 1; j < p; ++j) uk[j] *= inv;
    // Right-looking update of the trailing upper triangle: contiguous row updates vectorise.
    for (int64_t i = k + 1; i < p; ++i) {
      const double a = uk[i];
      if (a == 0) continue;
      double* ui = u.data() + i * p;
      for (int64_t j = i; j < p; ++j) ui[j] -= a * uk[j];
    }
  }

  // Solve UᵀU W = XᵀY for all outputs at once; W overwrites b, row i of which is [out].
  std::vector<double> b(xty_);
  const int64_t out = out_;
  for (int64_t i = 0; i < p; ++i) {  // Uᵀ z = b
    double* bi = b.data() + i * out;
    const double inv = 1.0 / u[i * p + i];
    for (int64_t o = 0; o < out; ++o) bi[o] *= inv;
    for (int64_t j = i + 1; j < p; ++j) {
      const double a = u[i * p + j];
      double* bj = b.data() + j * out;
      for (int64_t o = 0; o < out; ++o) bj[o] -= a * bi[o];
    }
  }
  for (int64_t i = p - 1; i >= 0; --i) {  // U w = z
    double* bi = b.data() + i * out;
    for (int64_t j = i + 1; j < p; ++j) {
      const double a = u[i * p + j];
      const double* bj = b.data() + j * out;
      for (int64_t o = 0; o < out; ++o) bi[o] -= a * bj[o];
    }
    const double inv = 1.0 / u[i * p + i];
    for (int64_t o = 0; o < out; ++o) bi[o] *= inv;
  }

  LinearRouter router;
  router.in = in_;
  router.out = out_;
  router.weight.resize(static_cast<size_t>(out_) * in_);
  router.bias.resize(out_);
  for (int64_t o = 0; o < out; ++o) {
    for (int64_t i = 0; i < in_; ++i) {
      router.weight[o * in_ + i] = static_cast<float>(b[i * out + o]);
    }
    router.bias[o] = static_cast<float>(b[in_ * out + o]);
  }
  for (float w : router.weight) {
    if (!std::isfinite(w)) {
      return absl::FailedPreconditionError(
          "RidgeAccumulator: the solution is not finite (non-finite inputs or an overflowing fit)");
    }
  }
  for (float w : router.bias) {
    if (!std::isfinite(w)) {
      return absl::FailedPreconditionError(
          "RidgeAccumulator: the solution is not finite (non-finite inputs or an overflowing fit)");
    }
  }
  return router;
}

LinearRouter CentroidRouter(std::span<const float> neuron_vectors, int64_t d_ff, int64_t in,
                            std::span<const int32_t> assignment, int num_modules) {
  LinearRouter router;
  router.in = static_cast<int>(std::max<int64_t>(in, 0));
  router.out = std::max(num_modules, 0);
  router.weight.assign(static_cast<size_t>(router.out) * router.in, 0.0f);
  router.bias.assign(router.out, 0.0f);
  if (in < 1 || num_modules < 1 || d_ff < 0 || static_cast<int64_t>(assignment.size()) != d_ff ||
      static_cast<int64_t>(neuron_vectors.size()) != d_ff * in) {
    return router;
  }
  // Summed in double: a module may hold thousands of neurons.
  std::vector<double> sum(static_cast<size_t>(num_modules) * in, 0.0);
  std::vector<int64_t> count(num_modules, 0);
  for (int64_t n = 0; n < d_ff; ++n) {
    const int32_t m = assignment[n];
    if (m < 0 || m >= num_modules) continue;
    ++count[m];
    const float* v = neuron_vectors.data() + n * in;
    double ss = 0;
    for (int64_t i = 0; i < in; ++i) ss += static_cast<double>(v[i]) * v[i];
    if (!(ss > 0)) continue;  // a zero vector has no direction; it adds nothing to the mean
    const double inv = 1.0 / std::sqrt(ss);
    double* s = sum.data() + static_cast<int64_t>(m) * in;
    for (int64_t i = 0; i < in; ++i) s[i] += v[i] * inv;
  }
  for (int m = 0; m < num_modules; ++m) {
    if (count[m] == 0) continue;
    const double inv = 1.0 / static_cast<double>(count[m]);
    for (int64_t i = 0; i < in; ++i) {
      router.weight[static_cast<int64_t>(m) * in + i] =
          static_cast<float>(sum[static_cast<int64_t>(m) * in + i] * inv);
    }
  }
  return router;
}

double TopKMassRecall(std::span<const float> scores, std::span<const float> mass, int64_t rows,
                      int modules, int k) {
  constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
  if (rows < 0 || modules < 1) return kNaN;
  if (static_cast<int64_t>(scores.size()) / modules != rows ||
      static_cast<int64_t>(scores.size()) % modules != 0 || mass.size() != scores.size()) {
    return kNaN;
  }
  k = std::clamp(k, 1, modules);
  std::vector<int> order(modules);
  std::vector<float> sorted_mass(modules);
  double total = 0;
  int64_t counted = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const float* s = scores.data() + r * modules;
    const float* m = mass.data() + r * modules;
    // The oracle's best top-k sum is the sum of the k largest masses, whichever modules hold them.
    if (std::any_of(m, m + modules, [](float v) { return std::isnan(v); })) continue;  // no truth
    std::copy_n(m, modules, sorted_mass.begin());
    std::partial_sort(sorted_mass.begin(), sorted_mass.begin() + k, sorted_mass.end(),
                      std::greater<float>());
    double best = 0;
    for (int j = 0; j < k; ++j) best += sorted_mass[j];
    if (!(best > 0)) continue;  // nothing to find in this row
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + k, order.end(), ScoreOrder{s});
    double got = 0;
    for (int j = 0; j < k; ++j) got += m[order[j]];
    total += got / best;
    ++counted;
  }
  return counted == 0 ? 1.0 : total / static_cast<double>(counted);
}

}  // namespace brickserve
