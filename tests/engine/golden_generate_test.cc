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

// on_logits sees, for every generated token, the logits it was sampled from: the reference's logits
// of each greedy step, before any processor touched them.
TEST(GoldenGenerate, OnLogitsSeesEachStepsRawLogits) {
  BS_SKIP_WITHOUT_GOLDEN();
  for (const auto& name : GoldenCaseNames()) {
    const auto c = LoadGoldenCase(name);
    EngineOptions o;
    o.model_dir = c.dir;
    auto engine = Engine::Load(o);
    ASSERT_TRUE(engine.ok()) << name << ": " << engine.status();
    GenerationRequest r;
    r.prompt_ids = c.prompt_ids;
    r.max_new_tokens = static_cast<int>(c.step_logits.size());
    r.ignore_eos = true;
    r.sampling.repetition_penalty = 1.5f;  // changes the sampler's copy, never what on_logits saw
    std::vector<std::vector<float>> seen;
    r.on_logits = [&seen](std::span<const float> row) { seen.emplace_back(row.begin(), row.end()); };
    auto out = (*engine)->Generate(r);
    ASSERT_TRUE(out.ok()) << name << ": " << out.status();
    ASSERT_EQ(seen.size(), out->tokens.size()) << name;
    // The decode follows its own tokens, which part from the greedy reference under the penalty:
    // compare while the contexts agree.
    for (size_t step = 0; step < seen.size(); ++step) {
      EXPECT_LE(testing::RelativeError(seen[step], c.step_logits[step]), testing::Tolerance(c.dtype))
          << name << " step " << step;
      if (out->tokens[step].id != c.greedy_ids[step]) break;
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

// The stop check is polled between prefill chunks and before each decode step, so a caller can
// stop a request whose output has not yet formed a piece.
TEST(GoldenGenerate, StopCheckEndsPrefillAndDecode) {
  BS_SKIP_WITHOUT_GOLDEN();
  const auto c = LoadGoldenCase(GoldenCaseNames().front());
  EngineOptions o;
  o.model_dir = c.dir;
  o.max_batch_tokens = 4;  // the prompt is prefilled in several chunks
  auto engine = Engine::Load(o);
  ASSERT_TRUE(engine.ok()) << engine.status();
  GenerationRequest r;
  r.prompt_ids = c.prompt_ids;
  r.max_new_tokens = 20;
  r.ignore_eos = true;

  const int chunks = static_cast<int>((c.prompt_ids.size() + 3) / 4);
  ASSERT_GE(chunks, 3);
  int polls = 0;
  auto during_prefill = (*engine)->Generate(r, {}, [&] { return ++polls > 2; });
  ASSERT_TRUE(during_prefill.ok()) << during_prefill.status();
  EXPECT_EQ(during_prefill->finish_reason, FinishReason::kCancelled);
  EXPECT_TRUE(during_prefill->tokens.empty());
  EXPECT_EQ(polls, 3);

  polls = 0;
  auto during_decode = (*engine)->Generate(r, {}, [&] { return ++polls > chunks + 5; });
  ASSERT_TRUE(during_decode.ok()) << during_decode.status();
  EXPECT_EQ(during_decode->finish_reason, FinishReason::kCancelled);
  // Chunks polls pass prefill; 5 decode polls pass, the 6th stops after the 6th sampled token.
  EXPECT_EQ(during_decode->tokens.size(), 6u);
  std::vector<int32_t> prefix(c.greedy_ids.begin(), c.greedy_ids.begin() + 6);
  EXPECT_EQ(during_decode->token_ids(), prefix);

  // The engine is unharmed: the next request runs in full.
  auto full = (*engine)->Generate(r);
  ASSERT_TRUE(full.ok());
  EXPECT_EQ(full->completion_tokens, 20);
}

}  // namespace
}  // namespace brickserve
