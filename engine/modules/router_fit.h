// Per-layer module routers: a linear map from the FFN input x [in] to one score per module [out].
// Both kinds the builder offers (a ridge fit to the measured module activity, MoEfication's
// centroid similarity) reduce to scores = W x + b, which is what the module-set file stores.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/statusor.h"

namespace brickserve {

struct LinearRouter {
  int in = 0;
  int out = 0;
  std::vector<float> weight;  // [out, in] row-major
  std::vector<float> bias;    // [out]
  // scores[o] = bias[o] + weight[o, :] · x. x: [in], scores: [out].
  void Scores(const float* x, float* scores) const;
};

// Ridge least squares with a bias, fitted from streamed rows: accumulates XᵀX and XᵀY in double
// (x augmented with a constant 1), then solves (XᵀX + lambda * mean(diag) * I) W = XᵀY by Cholesky
// in double. mean(diag) is the mean of the first `in` diagonal entries of XᵀX (scale-free lambda);
// the bias term is not regularised.
class RidgeAccumulator {
 public:
  // in, out >= 1 (otherwise Add does nothing and Solve returns INVALID_ARGUMENT).
  RidgeAccumulator(int in, int out);

  // x: [rows, in], y: [rows, out], both row-major. Chunking does not change the sums: each entry
  // accumulates its rows in order, so several Adds equal one Add of the concatenation.
  void Add(const float* x, const float* y, int64_t rows);
  int64_t rows() const { return rows_; }

  // INVALID_ARGUMENT for a negative or non-finite lambda or bad sizes; FAILED_PRECONDITION when no
  // rows were added or the regularised system is not (numerically) positive definite.
  absl::StatusOr<LinearRouter> Solve(double lambda = 1e-3) const;

 private:
  int in_ = 0;
  int out_ = 0;
  int64_t rows_ = 0;
  std::vector<double> xtx_;  // [in+1, in+1], upper triangle (j >= i) filled
  std::vector<double> xty_;  // [in+1, out]
};

// MoEfication's similarity router: module m's score is centroid_m · x with centroid_m the mean of
// the L2-normalised weight vectors (e.g. gate_proj rows) of its neurons; bias 0.
// neuron_vectors: [d_ff, in] row-major; assignment: module id per neuron (d_ff of them).
// A zero vector contributes zero; a module with no neurons gets a zero centroid.
// Precondition: neuron_vectors.size() == d_ff * in, assignment.size() == d_ff, ids in
// [0, num_modules), in >= 1, num_modules >= 1. Neurons whose id is out of range are ignored; on
// size mismatch the result has the requested shape with zero weights (no status in this signature).
LinearRouter CentroidRouter(std::span<const float> neuron_vectors, int64_t d_ff, int64_t in,
                            std::span<const int32_t> assignment, int num_modules);

// How well a router's top-k matches the truth: for each row, the mass (sum over the router's top-k
// modules of mass[row, m]) divided by the best possible (the oracle's top-k sum); the mean over
// rows. 1.0 = perfect. Rows with zero (or negative) oracle mass, or any NaN mass, are skipped; when
// every row is skipped the result is 1.0 (nothing could be missed). Ties in top-k go to the lower
// module id; a NaN score ranks below every number. k is clamped to [1, modules].
// scores, mass: [rows, modules] row-major. Returns NaN for rows < 0, modules < 1 or size mismatch.
double TopKMassRecall(std::span<const float> scores, std::span<const float> mass, int64_t rows,
                      int modules, int k);

}  // namespace brickserve
