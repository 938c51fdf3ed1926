#include "engine/modules/balanced_kmeans.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/modules/simd4.h"

namespace brickserve {
namespace {

using simd4::Dot;
using simd4::F4;
using simd4::Load4;
using simd4::Sum8;

// Dot of `a` with four vectors at once: each element of `a` is loaded once for four products,
// which roughly doubles the throughput of the similarity step. Same lanes and summation order as
// Dot, so the results equal four Dot calls exactly.
inline void Dot4(const float* a, const float* b0, const float* b1, const float* b2, const float* b3,
                 int64_t n, float* out) {
  F4 l0 = {}, h0 = {}, l1 = {}, h1 = {}, l2 = {}, h2 = {}, l3 = {}, h3 = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const F4 al = Load4(a + i), ah = Load4(a + i + 4);
    l0 += al * Load4(b0 + i);
    h0 += ah * Load4(b0 + i + 4);
    l1 += al * Load4(b1 + i);
    h1 += ah * Load4(b1 + i + 4);
    l2 += al * Load4(b2 + i);
    h2 += ah * Load4(b2 + i + 4);
    l3 += al * Load4(b3 + i);
    h3 += ah * Load4(b3 + i + 4);
  }
  float s0 = Sum8(l0, h0), s1 = Sum8(l1, h1), s2 = Sum8(l2, h2), s3 = Sum8(l3, h3);
  for (; i < n; ++i) {
    s0 += a[i] * b0[i];
    s1 += a[i] * b1[i];
    s2 += a[i] * b2[i];
    s3 += a[i] * b3[i];
  }
  out[0] = s0;
  out[1] = s1;
  out[2] = s2;
  out[3] = s3;
}

// Computed from differences rather than norms so that it is never negative (k-means++ samples
// proportionally to it).
inline float SqDist(const float* a, const float* b, int64_t n) {
  F4 lo = {}, hi = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const F4 dl = Load4(a + i) - Load4(b + i);
    const F4 dh = Load4(a + i + 4) - Load4(b + i + 4);
    lo += dl * dl;
    hi += dh * dh;
  }
  float s = Sum8(lo, hi);
  for (; i < n; ++i) {
    const float d = a[i] - b[i];
    s += d * d;
  }
  return s;
}

// Our own [0, 1) draw: std::uniform_real_distribution's output differs between standard libraries,
// and the clustering must be reproducible from the seed alone.
inline double Uniform01(std::mt19937_64& rng) {
  return static_cast<double>(rng() >> 11) * 0x1.0p-53;
}

// Scales v to unit length; a zero vector stays zero (no direction to keep).
void NormalizeInPlace(float* v, int64_t dim) {
  double ss = 0;
  for (int64_t d = 0; d < dim; ++d) ss += static_cast<double>(v[d]) * v[d];
  if (ss <= 0) return;
  const float inv = static_cast<float>(1.0 / std::sqrt(ss));
  for (int64_t d = 0; d < dim; ++d) v[d] *= inv;
}

// Maps a float to an unsigned key whose ascending order is the float's descending order, so one
// integer sort of (key << 32 | pair index) orders pairs by similarity, ties by index.
inline uint32_t DescendingKey(float f) {
  f += 0.0f;  // -0 -> +0, so equal similarities tie
  uint32_t u = std::bit_cast<uint32_t>(f);
  u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);  // ascending-order key
  return ~u;
}

// Greedy k-means++ (Arthur & Vassilvitskii; the "greedy" variant of scikit-learn): each new centre
// is the best of a few D²-weighted candidates, which makes a wasted centre inside an already
// covered cluster much less likely than with one draw.
std::vector<float> SeedCentroids(const std::vector<float>& pts, int64_t n, int64_t dim, int k,
                                 std::mt19937_64& rng) {
  std::vector<float> cent(static_cast<size_t>(k) * dim);
  const int trials = 2 + static_cast<int>(std::log(static_cast<double>(k)));
  auto row = [&](int64_t i) { return pts.data() + i * dim; };

  const int64_t first = static_cast<int64_t>(rng() % static_cast<uint64_t>(n));
  std::copy_n(row(first), dim, cent.data());
  std::vector<float> closest(n);
  double potential = 0;
  for (int64_t i = 0; i < n; ++i) {
    closest[i] = SqDist(row(i), row(first), dim);
    potential += closest[i];
  }

  std::vector<float> cand_dist(n), best_dist(n);
  for (int c = 1; c < k; ++c) {
    int64_t best = -1;
    double best_potential = 0;
    for (int t = 0; t < trials; ++t) {
      int64_t cand = n - 1;
      if (potential > 0) {
        // Inverse-CDF draw proportional to the squared distance to the nearest centre.
        const double r = Uniform01(rng) * potential;
        double cum = 0;
        for (int64_t i = 0; i < n; ++i) {
          cum += closest[i];
          if (cum > r) {
            cand = i;
            break;
          }
        }
      } else {
        // Every point coincides with a centre (fewer distinct points than k): any point will do.
        cand = static_cast<int64_t>(rng() % static_cast<uint64_t>(n));
      }
      double pot = 0;
      for (int64_t i = 0; i < n; ++i) {
        cand_dist[i] = std::min(closest[i], SqDist(row(i), row(cand), dim));
        pot += cand_dist[i];
      }
      if (best < 0 || pot < best_potential) {
        best = cand;
        best_potential = pot;
        best_dist.swap(cand_dist);
      }
    }
    std::copy_n(row(best), dim, cent.data() + static_cast<int64_t>(c) * dim);
    closest.swap(best_dist);
    potential = best_potential;
  }
  return cent;
}

// Orders (similarity key << 32 | pair index) ascending. The keys are written in pair-index order,
// so a stable LSD radix sort on the upper 32 bits alone gives the full (key, index) order; this is
// several times faster than std::sort on n * k = 250k keys, which otherwise dominates a step.
void SortBySimilarity(std::vector<uint64_t>& keys, std::vector<uint64_t>& scratch) {
  scratch.resize(keys.size());
  for (int shift = 32; shift < 64; shift += 8) {
    size_t start[257] = {};
    for (uint64_t key : keys) ++start[((key >> shift) & 0xff) + 1];
    for (int b = 0; b < 256; ++b) start[b + 1] += start[b];
    for (uint64_t key : keys) scratch[start[(key >> shift) & 0xff]++] = key;
    keys.swap(scratch);
  }
}

// MoEfication's balanced assignment: all (point, centroid) pairs from the most to the least
// similar; each point goes to the first centroid it meets that still has room (capacity n / k).
void AssignBalanced(const std::vector<float>& pts, const std::vector<float>& point_sq_norm,
                    int64_t n, int64_t dim, const std::vector<float>& cent, int k, bool euclidean,
                    std::vector<uint64_t>& keys, std::vector<uint64_t>& scratch,
                    std::vector<int32_t>& assignment) {
  std::vector<float> cent_sq_norm(k, 0.0f);
  if (euclidean) {
    for (int c = 0; c < k; ++c) {
      const float* cr = cent.data() + static_cast<int64_t>(c) * dim;
      cent_sq_norm[c] = Dot(cr, cr, dim);
    }
  }
  keys.resize(static_cast<size_t>(n) * k);
  std::vector<float> sims(k);
  auto crow = [&](int c) { return cent.data() + static_cast<int64_t>(c) * dim; };
  for (int64_t i = 0; i < n; ++i) {
    const float* p = pts.data() + i * dim;
    int c = 0;
    for (; c + 4 <= k; c += 4) {
      Dot4(p, crow(c), crow(c + 1), crow(c + 2), crow(c + 3), dim, &sims[c]);
    }
    for (; c < k; ++c) sims[c] = Dot(p, crow(c), dim);
    for (c = 0; c < k; ++c) {
      float sim = sims[c];
      // Negative squared distance; the point's own norm matters because pairs of different points
      // are compared in one global order.
      if (euclidean) sim = 2.0f * sim - point_sq_norm[i] - cent_sq_norm[c];
      const uint64_t pair = static_cast<uint64_t>(i) * k + c;
      keys[pair] = (static_cast<uint64_t>(DescendingKey(sim)) << 32) | pair;
    }
  }
  SortBySimilarity(keys, scratch);

  std::vector<int64_t> room(k, n / k);
  assignment.assign(n, -1);
  int64_t placed = 0;
  for (uint64_t key : keys) {
    const uint64_t pair = key & 0xffffffffu;
    const int64_t i = static_cast<int64_t>(pair / k);
    const int c = static_cast<int>(pair % k);
    if (assignment[i] >= 0 || room[c] == 0) continue;
    assignment[i] = c;
    --room[c];
    if (++placed == n) break;
  }
}

void UpdateCentroids(const std::vector<float>& pts, int64_t n, int64_t dim,
                     const std::vector<int32_t>& assignment, int k, bool normalize,
                     std::vector<float>& cent) {
  std::fill(cent.begin(), cent.end(), 0.0f);
  for (int64_t i = 0; i < n; ++i) {
    float* cr = cent.data() + static_cast<int64_t>(assignment[i]) * dim;
    const float* p = pts.data() + i * dim;
    for (int64_t d = 0; d < dim; ++d) cr[d] += p[d];
  }
  // Every cluster holds exactly n / k >= 1 points, so there is no empty cluster to re-seed.
  const float inv = 1.0f / static_cast<float>(n / k);
  for (int c = 0; c < k; ++c) {
    float* cr = cent.data() + static_cast<int64_t>(c) * dim;
    if (normalize) {
      NormalizeInPlace(cr, dim);
    } else {
      for (int64_t d = 0; d < dim; ++d) cr[d] *= inv;
    }
  }
}

}  // namespace

absl::StatusOr<std::vector<int32_t>> BalancedKMeans(std::span<const float> points, int64_t n,
                                                    int64_t dim, int k,
                                                    const BalancedKMeansOptions& options) {
  if (k < 1) {
    return absl::InvalidArgumentError(absl::StrCat("BalancedKMeans: k = ", k, " must be >= 1"));
  }
  if (n < 0) {
    return absl::InvalidArgumentError(absl::StrCat("BalancedKMeans: n = ", n, " must be >= 0"));
  }
  if (dim < 1) {
    return absl::InvalidArgumentError(absl::StrCat("BalancedKMeans: dim = ", dim, " must be >= 1"));
  }
  if (options.iterations < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("BalancedKMeans: iterations = ", options.iterations, " must be >= 1"));
  }
  if (n % k != 0) {
    return absl::InvalidArgumentError(absl::StrCat("BalancedKMeans: n = ", n,
                                                   " is not a multiple of k = ", k,
                                                   " (clusters must have equal size)"));
  }
  // Checked by division so that a huge n * dim cannot overflow before the comparison.
  if (static_cast<int64_t>(points.size()) / dim != n ||
      static_cast<int64_t>(points.size()) % dim != 0) {
    return absl::InvalidArgumentError(absl::StrCat("BalancedKMeans: points has ", points.size(),
                                                   " floats, expected n * dim = ", n, " * ", dim));
  }
  // Pair indices are packed into 32 bits of the sort key.
  if (n > 0 && static_cast<uint64_t>(n) > (uint64_t{0xffffffffu} / static_cast<uint64_t>(k))) {
    return absl::InvalidArgumentError(
        absl::StrCat("BalancedKMeans: n * k = ", n, " * ", k, " exceeds the limit 2^32 - 1"));
  }
  for (size_t i = 0; i < points.size(); ++i) {
    if (!std::isfinite(points[i])) {
      return absl::InvalidArgumentError(absl::StrCat(
          "BalancedKMeans: point ", i / dim, " has a non-finite value at dimension ", i % dim));
    }
  }
  if (n == 0) return std::vector<int32_t>();

  std::vector<float> pts(points.begin(), points.end());
  if (options.normalize) {
    for (int64_t i = 0; i < n; ++i) NormalizeInPlace(pts.data() + i * dim, dim);
  }
  const bool euclidean = !options.normalize;
  std::vector<float> point_sq_norm(n, 0.0f);
  if (euclidean) {
    for (int64_t i = 0; i < n; ++i) {
      const float* p = pts.data() + i * dim;
      point_sq_norm[i] = Dot(p, p, dim);
    }
  }

  std::mt19937_64 rng(options.seed);
  std::vector<float> cent = SeedCentroids(pts, n, dim, k, rng);

  std::vector<uint64_t> keys, scratch;
  std::vector<int32_t> assignment, next;
  for (int it = 0; it < options.iterations; ++it) {
    AssignBalanced(pts, point_sq_norm, n, dim, cent, k, euclidean, keys, scratch, next);
    if (it > 0 && next == assignment) break;  // converged: centroids would not move either
    assignment.swap(next);
    if (it + 1 < options.iterations) {
      UpdateCentroids(pts, n, dim, assignment, k, options.normalize, cent);
    }
  }
  return assignment;
}

std::vector<float> CoactivationFeatures(std::span<const float> activations, int64_t tokens,
                                        int64_t d_ff, double top_fraction) {
  if (tokens < 0 || d_ff < 0) return {};
  if (d_ff > 0 && (static_cast<int64_t>(activations.size()) % d_ff != 0 ||
                   static_cast<int64_t>(activations.size()) / d_ff != tokens)) {
    return {};
  }
  if (d_ff == 0 && !activations.empty()) return {};
  std::vector<float> features(static_cast<size_t>(d_ff) * tokens, 0.0f);
  if (d_ff == 0 || tokens == 0) return features;

  const double frac = std::isnan(top_fraction) ? 0.0 : std::clamp(top_fraction, 0.0, 1.0);
  const int64_t count =
      std::clamp<int64_t>(std::llround(frac * static_cast<double>(d_ff)), 0, d_ff);
  if (count == 0) return features;

  std::vector<float> magnitude(d_ff);
  std::vector<int32_t> order(d_ff);
  for (int64_t t = 0; t < tokens; ++t) {
    const float* a = activations.data() + t * d_ff;
    for (int64_t j = 0; j < d_ff; ++j) {
      magnitude[j] = std::isnan(a[j]) ? -1.0f : std::fabs(a[j]);  // NaN below every |number|
    }
    std::iota(order.begin(), order.end(), 0);
    // A strict total order (magnitude, then lower id), so the selected set is unique.
    std::nth_element(order.begin(), order.begin() + (count - 1), order.end(),
                     [&](int32_t x, int32_t y) {
                       if (magnitude[x] != magnitude[y]) return magnitude[x] > magnitude[y];
                       return x < y;
                     });
    for (int64_t r = 0; r < count; ++r) {
      features[static_cast<int64_t>(order[r]) * tokens + t] = 1.0f;
    }
  }
  return features;
}

}  // namespace brickserve
