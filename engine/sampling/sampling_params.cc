#include "engine/sampling/sampling_params.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace brickserve {
namespace {

absl::Status OutOfRange(const char* field, double value, const char* allowed) {
  return absl::InvalidArgumentError(absl::StrCat(field, " = ", value, " is out of range: ", allowed));
}

}  // namespace

absl::Status ValidateSamplingParams(const SamplingParams& p, int vocab_size) {
  if (!std::isfinite(p.temperature) || p.temperature < 0 || p.temperature > 100) {
    return OutOfRange("temperature", p.temperature, "must be in [0, 100] (0 = greedy)");
  }
  if (p.top_k < 0 || p.top_k > vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("top_k = ", p.top_k, " is out of range: must be in [0, ",
                                                   vocab_size, "] (0 = off; the vocabulary has ", vocab_size, " tokens)"));
  }
  if (!std::isfinite(p.top_p) || p.top_p <= 0 || p.top_p > 1) {
    return OutOfRange("top_p", p.top_p, "must be in (0, 1] (1 = off)");
  }
  if (!std::isfinite(p.min_p) || p.min_p < 0 || p.min_p >= 1) {
    return OutOfRange("min_p", p.min_p, "must be in [0, 1) (0 = off)");
  }
  if (!std::isfinite(p.repetition_penalty) || p.repetition_penalty <= 0 || p.repetition_penalty > 10) {
    return OutOfRange("repetition_penalty", p.repetition_penalty, "must be in (0, 10] (1 = off)");
  }
  if (!std::isfinite(p.presence_penalty) || std::fabs(p.presence_penalty) > 2) {
    return OutOfRange("presence_penalty", p.presence_penalty, "must be in [-2, 2] (0 = off)");
  }
  if (!std::isfinite(p.frequency_penalty) || std::fabs(p.frequency_penalty) > 2) {
    return OutOfRange("frequency_penalty", p.frequency_penalty, "must be in [-2, 2] (0 = off)");
  }
  return absl::OkStatus();
}

}  // namespace brickserve
