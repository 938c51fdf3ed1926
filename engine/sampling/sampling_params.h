// Per-request sampling settings, with the validation every entry point (CLI, gRPC) shares.
#pragma once

#include <cstdint>
#include <optional>

#include "absl/status/status.h"

namespace brickserve {

struct SamplingParams {
  float temperature = 0.0f;         // 0 = greedy (argmax); otherwise in (0, 100]
  int top_k = 0;                    // 0 = off
  float top_p = 1.0f;               // (0, 1]; 1 = off
  float min_p = 0.0f;               // [0, 1); 0 = off (keep tokens with p >= min_p * p_max)
  float repetition_penalty = 1.0f;  // (0, 10]; 1 = off; HF semantics over prompt and output
  float presence_penalty = 0.0f;    // [-2, 2]; OpenAI semantics over the output
  float frequency_penalty = 0.0f;   // [-2, 2]; OpenAI semantics over the output
  std::optional<uint64_t> seed;     // same seed, same output; unset = fresh randomness

  bool greedy() const { return temperature == 0.0f; }
};

// INVALID_ARGUMENT naming the field and its allowed range.
absl::Status ValidateSamplingParams(const SamplingParams& p, int vocab_size);

}  // namespace brickserve
