// The whole engine path (Engine::Load, Generate, Score) on the golden checkpoints.
#include <cmath>

#include "engine/engine.h"
#include "golden_util.h"

namespace brickserve {
namespace {

using testing::GoldenCaseNames;
using testing::LoadGoldenCase;

double RefLogprob(const std::vector<float>& logits, int32_t id) {
  double mx = *std::max_element(logits.begin(), logits.end()), s = 0;
  for (float l : logits) s += std::exp(l - mx);
  return logits[id] - mx - std::log(s);
}

TEST(GoldenGenerate, GreedyTokensEqualReference) {
  BS_SKIP_WITHOUT_GOLDEN();
  for (const auto& name : GoldenCaseNames()) {
    const auto c = LoadGoldenCase(name);
    for (int chunk : {512, 4}) {  // one prefill pass, and prefill in chunks of 4
      EngineOptions o;
      o.model_dir = c.dir;
      o.max_batch_tokens = chunk;
      o.device.threads = 2;
      auto engine = Engine::Load(o);
      ASSERT_TRUE(engine.ok()) << name << ": " << engine.status();
      GenerationRequest r;
      r.prompt_ids = c.prompt_ids;
      r.max_new_tokens = static_cast<int>(c.greedy_ids.size());
      r.ignore_eos = true;
      auto out = (*engine)->Generate(r);
      ASSERT_TRUE(out.ok()) << name << ": " << out.status();
      EXPECT_EQ(out->token_ids(), c.greedy_ids) << name << " with prefill chunks of " << chunk;
      EXPECT_EQ(out->finish_reason, FinishReason::kLength);
      EXPECT_EQ(out->prompt_tokens, static_cast<int>(c.prompt_ids.size()));
    }
  }
}

TEST(GoldenGenerate, ScoreEqualsReferenceLogSoftmax) {
  BS_SKIP_WITHOUT_GOLDEN();
  for (const auto& name : GoldenCaseNames()) {
    const auto c = LoadGoldenCase(name);
    EngineOptions o;
    o.model_dir = c.dir;
    o.max_batch_tokens = 5;
    auto engine = Engine::Load(o);
    ASSERT_TRUE(engine.ok()) << engine.status();
    auto score = (*engine)->Score(c.prompt_ids, 3);
    ASSERT_TRUE(score.ok()) << score.status();
    ASSERT_EQ(score->tokens.size(), c.prompt_ids.size() - 1);
    for (size_t i = 1; i < c.prompt_ids.size(); ++i) {
      const auto& row = c.prompt_logits[i - 1];
      const double scale = std::fabs(*std::max_element(row.begin(), row.end(),
                                                       [](float a, float b) { return std::fabs(a) < std::fabs(b); }));
      // Logits agree to 1e-4 of their scale; a log-softmax can move by at most twice that.
      const double tol = 2e-4 * scale;
      EXPECT_NEAR(score->tokens[i - 1].logprob, RefLogprob(row, c.prompt_ids[i]), tol) << name << " token " << i;
      ASSERT_EQ(score->tokens[i - 1].top.size(), 3u);
      const int32_t argmax = std::max_element(row.begin(), row.end()) - row.begin();
      EXPECT_EQ(score->tokens[i - 1].top[0].id, argmax) << name << " token " << i;
    }
  }
}

}  // namespace
}  // namespace brickserve
