#include "engine/serving/step_cost_model.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace brickserve {

void StepCostModel::Observe(int rows, double seconds) {
  if (rows <= 0 || !(seconds >= 0) || !std::isfinite(seconds)) return;
  const double x = rows;
  w_ = w_ * decay_ + 1;
  sx_ = sx_ * decay_ + x;
  sy_ = sy_ * decay_ + seconds;
  sxx_ = sxx_ * decay_ + x * x;
  sxy_ = sxy_ * decay_ + x * seconds;
  ++steps_;
  Refit();
}

void StepCostModel::Refit() {
  const double mx = sx_ / w_, my = sy_ / w_;
  const double var = sxx_ / w_ - mx * mx;
  // Steps of (nearly) one size, as in steady decoding, say nothing about the slope: keep the one
  // learned when sizes varied, or, before any, charge everything to the rows (cost proportional
  // to rows: pessimistic for more rows than seen, which only makes chunks smaller).
  if (var > 0.25) {
    const double slope = (sxy_ / w_ - mx * my) / var;
    if (slope > 0) {
      per_row_ = slope;
      slope_seen_ = true;
    }
  }
  if (!slope_seen_) per_row_ = my / mx;
  fixed_ = std::max(0.0, my - per_row_ * mx);
}

int StepCostModel::RowsWithin(double seconds) const {
  if (seconds <= fixed_) return 0;
  if (per_row_ <= 0) return std::numeric_limits<int>::max();
  const double rows = std::floor((seconds - fixed_) / per_row_);
  return rows >= std::numeric_limits<int>::max() ? std::numeric_limits<int>::max() : static_cast<int>(rows);
}

}  // namespace brickserve
