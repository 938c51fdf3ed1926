// Turns a row of logits into the next token: penalties, temperature, top-k, top-p, min-p, then a
// seeded draw (or argmax when greedy). Also computes log-probabilities for scoring and streaming.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <unordered_map>
#include <vector>

#include "engine/backend/device.h"
#include "engine/sampling/sampling_params.h"

namespace brickserve {

struct TokenLogprob {
  int32_t id = 0;
  float logprob = 0.0f;
};

// log_softmax(logits)[id], computed stably.
float LogprobOf(std::span<const float> logits, int32_t id);
// The n most likely tokens under softmax(logits), most likely first (ties: lower id first).
std::vector<TokenLogprob> TopLogprobs(std::span<const float> logits, int n);

// Picks one token from a row of logits (modified in place by the penalties) with `row`'s
// processors and draw: the one definition of the sampling semantics, which Device::SampleTokens
// implementations reproduce. `candidates` is scratch.
int32_t SampleOnHost(std::span<float> logits, const SampleRow& row, std::vector<std::pair<float, int32_t>>* candidates);

// A request's sampling state: its processors, its seeded RNG stream and the tokens the penalties see.
class Sampler {
 public:
  // `prompt` feeds the repetition penalty (HF applies it to prompt tokens too).
  Sampler(const SamplingParams& params, std::span<const int32_t> prompt);

  // Picks the next token from `logits` (modified in place by the processors) and records it.
  int32_t Sample(std::span<float> logits);

  // Sampling elsewhere (Device::SampleTokens) takes two steps per token: the step's Row (its
  // processors, penalty tokens and the draw from this request's RNG, made as Sample makes it), then
  // Record of the token picked. `penalties` receives the row's penalty tokens (each once); it must
  // outlive the row.
  void Row(int vocab, std::vector<PenaltyToken>* penalties, SampleRow* row);
  void Record(int32_t id);  // after the step's Row (which sized the seen-token mask)

 private:
  void BuildSeenMask(size_t vocab);
  double Draw();

  SamplingParams params_;
  std::mt19937_64 rng_;
  std::unordered_map<int32_t, int> output_counts_;  // presence/frequency penalties
  std::vector<int32_t> seen_;                       // repetition penalty: prompt and output, unique
  std::vector<bool> seen_mask_;
  // Scratch reused across steps.
  std::vector<PenaltyToken> penalties_;
  std::vector<std::pair<float, int32_t>> candidates_;
};

}  // namespace brickserve
