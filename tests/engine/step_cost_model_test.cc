// The step cost fit: recovers fixed + per-row seconds from steps of varied size, keeps its slope
// through steady same-size steps, and turns a time target into rows.
#include "engine/serving/step_cost_model.h"

#include <limits>
#include <random>

#include "gtest/gtest.h"

namespace brickserve {
namespace {

TEST(StepCostModel, RecoversFixedAndPerRowCostFromVariedSteps) {
  std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<int> rows(1, 80);
  std::normal_distribution<double> noise(0, 0.002);  // 2 ms: this host's step-to-step jitter
  StepCostModel m;
  const double fixed = 0.045, per_row = 0.0052;  // the 345M F32 model on a 2-core host
  for (int i = 0; i < 400; ++i) {
    const int r = rows(rng);
    m.Observe(r, fixed + per_row * r + noise(rng));
  }
  ASSERT_TRUE(m.ready());
  EXPECT_NEAR(m.per_row_seconds(), per_row, per_row * 0.1);
  EXPECT_NEAR(m.fixed_seconds(), fixed, 0.01);
  // 171 ms (3x a 57 ms decode step) leaves (0.171 - 0.045) / 0.0052 = 24 rows.
  EXPECT_NEAR(m.RowsWithin(0.171), 24, 2);
  EXPECT_EQ(m.RowsWithin(0.01), 0) << "below the fixed cost no step fits";
}

TEST(StepCostModel, SteadySameSizeStepsKeepTheLearnedSlope) {
  StepCostModel m;
  for (int i = 0; i < 40; ++i) m.Observe(1 + (i % 5) * 16, 0.05 + 0.005 * (1 + (i % 5) * 16));
  const double slope = m.per_row_seconds();
  EXPECT_NEAR(slope, 0.005, 1e-9);
  // 200 steps of 16 rows that cost more than before (the machine got busier): no new slope can be
  // learned from them; while the varied steps fade, the fit shifts some of the change onto the slope
  // (within 20 %), and the prediction at the current size follows the new cost.
  for (int i = 0; i < 200; ++i) m.Observe(16, 0.05 + 0.005 * 16 + 0.02);
  EXPECT_NEAR(m.per_row_seconds(), slope, slope * 0.2);
  EXPECT_NEAR(m.Predict(16), 0.15, 1e-3);
}

TEST(StepCostModel, BeforeVariedStepsCostIsProportionalToRows) {
  StepCostModel m;
  EXPECT_FALSE(m.ready());
  for (int i = 0; i < StepCostModel::kMinSteps; ++i) m.Observe(8, 0.08);
  ASSERT_TRUE(m.ready());
  EXPECT_NEAR(m.per_row_seconds(), 0.01, 1e-12);
  EXPECT_NEAR(m.fixed_seconds(), 0.0, 1e-12);
  EXPECT_EQ(m.RowsWithin(0.1), 10);
}

TEST(StepCostModel, IgnoresEmptyStepsAndBadTimes) {
  StepCostModel m;
  m.Observe(0, 1.0);
  m.Observe(4, -1.0);
  m.Observe(4, std::numeric_limits<double>::quiet_NaN());
  m.Observe(4, std::numeric_limits<double>::infinity());
  EXPECT_FALSE(m.ready());
  EXPECT_EQ(m.per_row_seconds(), 0.0);
}

}  // namespace
}  // namespace brickserve
