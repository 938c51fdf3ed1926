// Sampling: each processor against a direct computation of what it must do.
#include "engine/sampling/sampler.h"

#include <cmath>
#include <map>
#include <numeric>
#include <random>

#include "gtest/gtest.h"

namespace brickserve {
namespace {

std::vector<float> RandomLogits(int n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, 2.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

std::vector<double> Softmax(const std::vector<float>& l, double temperature) {
  double mx = *std::max_element(l.begin(), l.end());
  std::vector<double> p(l.size());
  double s = 0;
  for (size_t i = 0; i < l.size(); ++i) s += p[i] = std::exp((l[i] - mx) / temperature);
  for (auto& x : p) x /= s;
  return p;
}

// Draws `n` samples with fresh samplers sharing one seed stream and returns frequencies.
std::vector<double> Frequencies(SamplingParams params, const std::vector<float>& logits, int n) {
  std::vector<double> freq(logits.size());
  params.seed = 12345;
  Sampler sampler(params, {});
  for (int i = 0; i < n; ++i) {
    // Penalties are off in these tests, so one sampler can draw repeatedly.
    auto l = logits;
    freq[sampler.Sample(l)] += 1.0 / n;
  }
  return freq;
}

TEST(Sampler, GreedyIsArgmax) {
  for (uint64_t seed = 0; seed < 20; ++seed) {
    auto l = RandomLogits(100, seed);
    const int32_t want = std::max_element(l.begin(), l.end()) - l.begin();
    Sampler s(SamplingParams{}, {});
    EXPECT_EQ(s.Sample(l), want);
  }
}

TEST(Sampler, SameSeedSameTokens) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_p = 0.9f;
  p.seed = 7;
  const auto logits = RandomLogits(500, 1);
  std::vector<int32_t> a, b;
  Sampler s1(p, {}), s2(p, {});
  for (int i = 0; i < 50; ++i) {
    auto l1 = logits, l2 = logits;
    a.push_back(s1.Sample(l1));
    b.push_back(s2.Sample(l2));
  }
  EXPECT_EQ(a, b);
  p.seed = 8;
  Sampler s3(p, {});
  std::vector<int32_t> c;
  for (int i = 0; i < 50; ++i) {
    auto l = logits;
    c.push_back(s3.Sample(l));
  }
  EXPECT_NE(a, c);
}

TEST(Sampler, TemperatureSamplingFollowsSoftmax) {
  const auto logits = RandomLogits(8, 3);
  for (float t : {0.5f, 1.0f, 2.0f}) {
    SamplingParams p;
    p.temperature = t;
    const auto freq = Frequencies(p, logits, 40000);
    const auto want = Softmax(logits, t);
    for (size_t i = 0; i < want.size(); ++i) {
      // 40k draws: standard error <= 0.0025; allow 4 sigma.
      EXPECT_NEAR(freq[i], want[i], 0.01) << "token " << i << " temperature " << t;
    }
  }
}

TEST(Sampler, TopKKeepsOnlyKMostLikely) {
  const auto logits = RandomLogits(50, 4);
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_k = 3;
  const auto freq = Frequencies(p, logits, 20000);
  std::vector<int> order(logits.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int a, int b) { return logits[a] > logits[b]; });
  double z = 0;
  for (int i = 0; i < 3; ++i) z += std::exp(logits[order[i]]);
  for (size_t r = 0; r < order.size(); ++r) {
    const double want = r < 3 ? std::exp(logits[order[r]]) / z : 0.0;
    EXPECT_NEAR(freq[order[r]], want, 0.015) << "rank " << r;
  }
}

TEST(Sampler, TopPKeepsSmallestNucleus) {
  // Probabilities 0.5, 0.3, 0.15, 0.05: top_p 0.75 keeps the first two (0.5 + 0.3 >= 0.75).
  std::vector<float> logits = {std::log(0.15f), std::log(0.5f), std::log(0.05f), std::log(0.3f)};
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_p = 0.75f;
  const auto freq = Frequencies(p, logits, 20000);
  EXPECT_NEAR(freq[1], 0.5 / 0.8, 0.015);
  EXPECT_NEAR(freq[3], 0.3 / 0.8, 0.015);
  EXPECT_EQ(freq[0], 0.0);
  EXPECT_EQ(freq[2], 0.0);
}

TEST(Sampler, MinPDropsTokensBelowFractionOfMax) {
  // p = 0.5, 0.3, 0.15, 0.05; min_p 0.25 keeps p >= 0.125: the first three.
  std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
  SamplingParams p;
  p.temperature = 1.0f;
  p.min_p = 0.25f;
  const auto freq = Frequencies(p, logits, 20000);
  EXPECT_NEAR(freq[0], 0.5 / 0.95, 0.015);
  EXPECT_NEAR(freq[2], 0.15 / 0.95, 0.015);
  EXPECT_EQ(freq[3], 0.0);
}

TEST(Sampler, RepetitionPenaltyFollowsTransformers) {
  // HF: a seen token's logit is divided by the penalty when positive, multiplied when negative.
  std::vector<float> logits = {2.0f, 1.9f, -1.0f, -1.1f};
  SamplingParams p;
  p.repetition_penalty = 2.0f;
  const std::vector<int32_t> prompt = {0, 2};
  Sampler s(p, prompt);
  auto l = logits;
  EXPECT_EQ(s.Sample(l), 1);  // 2.0 -> 1.0 now loses to 1.9
  EXPECT_FLOAT_EQ(l[0], 1.0f);
  EXPECT_FLOAT_EQ(l[2], -2.0f);
  EXPECT_FLOAT_EQ(l[3], -1.1f);
}

TEST(Sampler, PresenceAndFrequencyPenaltiesCountOutputTokens) {
  SamplingParams p;
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 0.25f;
  Sampler s(p, /*prompt=*/std::vector<int32_t>{1});  // prompt tokens do not count (OpenAI semantics)
  std::vector<float> l = {3.0f, 2.1f, 0.0f};
  EXPECT_EQ(s.Sample(l), 0);
  EXPECT_FLOAT_EQ(l[1], 2.1f);
  l = {3.0f, 2.1f, 0.0f};
  EXPECT_EQ(s.Sample(l), 0);  // 3 - 1 * 0.25 - 0.5 = 2.25 still wins
  EXPECT_FLOAT_EQ(l[0], 2.25f);
  l = {3.0f, 2.1f, 0.0f};
  EXPECT_EQ(s.Sample(l), 1);  // 3 - 2 * 0.25 - 0.5 = 2.0 now loses to 2.1
  EXPECT_FLOAT_EQ(l[0], 2.0f);
  l = {3.0f, 2.1f, 0.0f};
  s.Sample(l);
  EXPECT_FLOAT_EQ(l[1], 2.1f - 0.25f - 0.5f);
}

TEST(Logprobs, MatchLogSoftmaxAndSortTopN) {
  const auto logits = RandomLogits(64, 9);
  const auto p = Softmax(logits, 1.0);
  for (int id : {0, 5, 63}) EXPECT_NEAR(LogprobOf(logits, id), std::log(p[id]), 1e-5);
  const auto top = TopLogprobs(logits, 5);
  ASSERT_EQ(top.size(), 5u);
  for (size_t i = 1; i < top.size(); ++i) EXPECT_GE(top[i - 1].logprob, top[i].logprob);
  EXPECT_EQ(top[0].id, std::max_element(logits.begin(), logits.end()) - logits.begin());
}

TEST(SamplingParams, ValidationNamesFieldAndLimit) {
  auto check = [](SamplingParams p, const std::string& fragment) {
    const auto s = ValidateSamplingParams(p, 1000);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find(fragment), std::string::npos) << s.message();
  };
  SamplingParams p;
  EXPECT_TRUE(ValidateSamplingParams(p, 1000).ok());
  p = {}; p.temperature = -1; check(p, "temperature = -1 is out of range: must be in [0, 100]");
  p = {}; p.top_k = 1001; check(p, "top_k = 1001 is out of range: must be in [0, 1000]");
  p = {}; p.top_p = 0; check(p, "top_p = 0 is out of range: must be in (0, 1]");
  p = {}; p.min_p = 1; check(p, "min_p = 1 is out of range");
  p = {}; p.repetition_penalty = 0; check(p, "repetition_penalty = 0");
  p = {}; p.presence_penalty = 3; check(p, "presence_penalty = 3");
  p = {}; p.frequency_penalty = -2.5; check(p, "frequency_penalty = -2.5");
  p = {}; p.temperature = NAN; check(p, "temperature");
}

}  // namespace
}  // namespace brickserve
