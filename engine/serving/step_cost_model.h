// What a forward step costs as a function of its rows, learned from the steps the scheduler runs:
// seconds ~= fixed + per_row * rows, fitted by exponentially weighted least squares. The fixed part
// is reading every weight once (memory bound); each row adds its arithmetic. The scheduler uses it
// to size prompt chunks so that a step mixing them with decode rows stays within a time target
// (`max_step_ms`): Sarathi-Serve's token budget, derived from measured step times instead of a
// profile taken offline.
#pragma once

namespace brickserve {

class StepCostModel {
 public:
  // `decay` weighs the newest step against the older ones: 1 - decay of the fit comes from it.
  explicit StepCostModel(double decay = 0.95) : decay_(decay) {}

  void Observe(int rows, double seconds);

  // Whether there is enough to predict: kMinSteps steps seen.
  bool ready() const { return steps_ >= kMinSteps; }
  double fixed_seconds() const { return fixed_; }
  double per_row_seconds() const { return per_row_; }
  double Predict(int rows) const { return fixed_ + per_row_ * rows; }

  // The most rows a step may have to finish within `seconds` (0 when even an empty one would not).
  int RowsWithin(double seconds) const;

  static constexpr int kMinSteps = 4;

 private:
  void Refit();

  const double decay_;
  long steps_ = 0;
  // Decayed sums of weights, x = rows, y = seconds.
  double w_ = 0, sx_ = 0, sy_ = 0, sxx_ = 0, sxy_ = 0;
  double fixed_ = 0, per_row_ = 0;
  bool slope_seen_ = false;  // per_row_ is a fitted slope, not the proportional stand-in
};

}  // namespace brickserve
