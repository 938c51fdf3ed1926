// Clustering of FFN neurons into equal-size modules (MoEfication, arXiv 2110.01786): every module
// must hold exactly d_ff / N neurons so that a module is a fixed-shape slice of the FFN weights.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"

namespace brickserve {

struct BalancedKMeansOptions {
  // Maximum number of assignment steps (>= 1); stops earlier when the assignment stops changing.
  int iterations = 20;
  uint64_t seed = 1;
  // L2-normalise points first (cosine k-means); otherwise squared Euclidean distance.
  bool normalize = true;
};

// points: n rows of `dim` floats. Returns a cluster id in [0, k) per point; every cluster gets
// exactly n / k points. Seeding is greedy k-means++ (a few candidates per centre, the one that
// lowers the potential most) from std::mt19937_64(seed); the assignment step is MoEfication's
// greedy balanced assignment (all (point, centroid) pairs by similarity, best first, ties to the
// lower point then centroid index, each point to its best centroid with capacity left).
// Deterministic for a given seed and build.
// INVALID_ARGUMENT when k < 1, n < 0, dim < 1, iterations < 1, n % k != 0,
// points.size() != n * dim, n * k >= 2^32, or a point is not finite.
absl::StatusOr<std::vector<int32_t>> BalancedKMeans(std::span<const float> points, int64_t n,
                                                    int64_t dim, int k,
                                                    const BalancedKMeansOptions& options = {});

// Features for co-activation clustering: for each of T tokens, mark the `top_fraction` of neurons
// with the largest |activation|; a neuron's feature vector is its row of marks over tokens (float
// 0/1), so neurons that fire together get similar vectors.
// activations: [tokens, d_ff] row-major. Returns [d_ff, tokens] row-major.
// Per token exactly llround(top_fraction * d_ff) neurons are marked (nearest, halves away from
// zero; top_fraction is clamped to [0, 1], NaN counts as 0). Ties in |activation| go to the lower
// neuron id; a NaN activation ranks below every number.
// Precondition: activations.size() == tokens * d_ff, tokens >= 0, d_ff >= 0; otherwise the result
// is empty (this signature has no status to report it).
std::vector<float> CoactivationFeatures(std::span<const float> activations, int64_t tokens,
                                        int64_t d_ff, double top_fraction);

}  // namespace brickserve
