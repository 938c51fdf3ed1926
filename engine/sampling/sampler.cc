#include "engine/sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace brickserve {
namespace {

// Uniform in [0, 1) from the top 53 bits: the same stream on every platform for a given seed
// (std::uniform_real_distribution is implementation-defined).
double Uniform01(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

double LogSumExp(std::span<const float> logits) {
  const float mx = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (float l : logits) sum += std::exp(static_cast<double>(l) - mx);
  return mx + std::log(sum);
}

}  // namespace

float LogprobOf(std::span<const float> logits, int32_t id) {
  return static_cast<float>(logits[id] - LogSumExp(logits));
}

std::vector<TokenLogprob> TopLogprobs(std::span<const float> logits, int n) {
  n = std::min<int>(n, static_cast<int>(logits.size()));
  std::vector<int32_t> ids(logits.size());
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(i);
  auto better = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  std::partial_sort(ids.begin(), ids.begin() + n, ids.end(), better);
  const double lse = LogSumExp(logits);
  std::vector<TokenLogprob> out(n);
  for (int i = 0; i < n; ++i) out[i] = {ids[i], static_cast<float>(logits[ids[i]] - lse)};
  return out;
}

Sampler::Sampler(const SamplingParams& params, std::span<const int32_t> prompt)
    : params_(params), rng_(params.seed.has_value() ? *params.seed : std::random_device{}()) {
  seen_.assign(prompt.begin(), prompt.end());
}

void Sampler::ApplyPenalties(std::span<float> logits) const {
  if (params_.repetition_penalty != 1.0f) {
    for (size_t i = 0; i < logits.size(); ++i) {
      if (!seen_mask_[i]) continue;
      logits[i] = logits[i] > 0 ? logits[i] / params_.repetition_penalty : logits[i] * params_.repetition_penalty;
    }
  }
  if (params_.presence_penalty != 0.0f || params_.frequency_penalty != 0.0f) {
    for (const auto& [id, count] : output_counts_) {
      logits[id] -= params_.frequency_penalty * count + params_.presence_penalty;
    }
  }
}

int32_t Sampler::Sample(std::span<float> logits) {
  const int32_t vocab = static_cast<int32_t>(logits.size());
  if (seen_mask_.size() != logits.size()) {
    seen_mask_.assign(logits.size(), false);
    for (int32_t id : seen_) {
      if (id >= 0 && id < vocab) seen_mask_[id] = true;
    }
  }
  ApplyPenalties(logits);

  int32_t chosen = 0;
  if (params_.greedy()) {
    chosen = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  } else {
    auto& c = candidates_;
    c.resize(vocab);
    const float inv_t = 1.0f / params_.temperature;
    for (int32_t i = 0; i < vocab; ++i) c[i] = {logits[i] * inv_t, i};
    auto better = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
    size_t keep = c.size();
    if (params_.top_k > 0 && params_.top_k < vocab) {
      keep = params_.top_k;
      std::nth_element(c.begin(), c.begin() + (keep - 1), c.end(), better);
      c.resize(keep);
    }
    const bool need_sorted = params_.top_p < 1.0f || params_.min_p > 0.0f;
    if (need_sorted) std::sort(c.begin(), c.end(), better);
    const float mx = std::max_element(c.begin(), c.end(), [](const auto& a, const auto& b) { return a.first < b.first; })->first;
    std::vector<double> probs(c.size());
    double sum = 0;
    for (size_t i = 0; i < c.size(); ++i) sum += probs[i] = std::exp(static_cast<double>(c[i].first) - mx);
    for (auto& p : probs) p /= sum;
    if (params_.top_p < 1.0f) {  // smallest prefix whose mass reaches top_p
      double cum = 0;
      size_t n = 0;
      while (n < probs.size() && cum < params_.top_p) cum += probs[n++];
      keep = std::max<size_t>(n, 1);
    } else {
      keep = probs.size();
    }
    if (params_.min_p > 0.0f) {  // probs[0] is the largest once sorted
      const double threshold = params_.min_p * probs[0];
      size_t n = 1;
      while (n < keep && probs[n] >= threshold) ++n;
      keep = n;
    }
    double kept_mass = 0;
    for (size_t i = 0; i < keep; ++i) kept_mass += probs[i];
    const double u = Uniform01(rng_) * kept_mass;
    double cum = 0;
    chosen = c[keep - 1].second;
    for (size_t i = 0; i < keep; ++i) {
      cum += probs[i];
      if (u < cum) {
        chosen = c[i].second;
        break;
      }
    }
  }
  ++output_counts_[chosen];
  if (!seen_mask_[chosen]) {
    seen_mask_[chosen] = true;
    seen_.push_back(chosen);
  }
  return chosen;
}

}  // namespace brickserve
