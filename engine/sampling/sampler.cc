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
  // Unique: a device applies each listed token's penalty once.
  seen_.assign(prompt.begin(), prompt.end());
  std::sort(seen_.begin(), seen_.end());
  seen_.erase(std::unique(seen_.begin(), seen_.end()), seen_.end());
}

void Sampler::BuildSeenMask(size_t vocab) {
  if (seen_mask_.size() == vocab) return;
  seen_mask_.assign(vocab, false);
  for (int32_t id : seen_) {
    if (id >= 0 && static_cast<size_t>(id) < vocab) seen_mask_[id] = true;
  }
}

double Sampler::Draw() { return Uniform01(rng_); }

int32_t Sampler::Sample(std::span<float> logits) {
  SampleRow row;
  Row(static_cast<int>(logits.size()), &penalties_, &row);
  const int32_t chosen = SampleOnHost(logits, row, &candidates_);
  Record(chosen);
  return chosen;
}

void Sampler::Row(int vocab, std::vector<PenaltyToken>* penalties, SampleRow* row) {
  BuildSeenMask(static_cast<size_t>(vocab));  // Record keeps seen_ unique through it
  penalties->clear();
  const bool repetition = params_.repetition_penalty != 1.0f;
  const bool counts = params_.presence_penalty != 0.0f || params_.frequency_penalty != 0.0f;
  if (repetition) {
    for (int32_t id : seen_) {
      if (id < 0 || id >= vocab) continue;
      auto it = output_counts_.find(id);
      penalties->push_back({id, counts && it != output_counts_.end() ? it->second : 0, 1});
    }
  }
  if (counts && !repetition) {  // with it, the output tokens (all in seen_) are listed above
    for (const auto& [id, count] : output_counts_) penalties->push_back({id, count, 0});
  }
  row->temperature = params_.temperature;
  row->top_k = params_.top_k;
  row->top_p = params_.top_p;
  row->min_p = params_.min_p;
  row->repetition_penalty = params_.repetition_penalty;
  row->presence_penalty = params_.presence_penalty;
  row->frequency_penalty = params_.frequency_penalty;
  row->uniform = params_.greedy() ? 0.0 : Draw();  // greedy steps take no draw from the stream
  row->penalties = *penalties;
}

void Sampler::Record(int32_t chosen) {
  ++output_counts_[chosen];
  if (static_cast<size_t>(chosen) < seen_mask_.size() && !seen_mask_[chosen]) {
    seen_mask_[chosen] = true;
    seen_.push_back(chosen);
  }
}

int32_t SampleOnHost(std::span<float> logits, const SampleRow& row,
                     std::vector<std::pair<float, int32_t>>* candidates) {
  const int32_t vocab = static_cast<int32_t>(logits.size());
  for (const PenaltyToken& t : row.penalties) {
    float& v = logits[t.id];
    if (row.repetition_penalty != 1.0f && t.seen) v = v > 0 ? v / row.repetition_penalty : v * row.repetition_penalty;
    if ((row.presence_penalty != 0.0f || row.frequency_penalty != 0.0f) && t.output_count > 0) {
      v -= row.frequency_penalty * t.output_count + row.presence_penalty;
    }
  }
  if (row.temperature == 0.0f) {
    return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  auto& c = *candidates;
  c.resize(vocab);
  const float inv_t = 1.0f / row.temperature;
  for (int32_t i = 0; i < vocab; ++i) c[i] = {logits[i] * inv_t, i};
  auto better = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
  const bool top_k = row.top_k > 0 && row.top_k < vocab;
  if (top_k) {
    std::nth_element(c.begin(), c.begin() + (row.top_k - 1), c.end(), better);
    c.resize(row.top_k);
  }
  // With any cut the draw walks the candidates best first (also after top-k alone: nth_element's
  // order is the library's, and a device must walk the same order); without one it walks the
  // vocabulary by id, and sorting it would cost more than the rest of the step.
  if (top_k || row.top_p < 1.0f || row.min_p > 0.0f) std::sort(c.begin(), c.end(), better);
  const float mx = std::max_element(c.begin(), c.end(), [](const auto& a, const auto& b) { return a.first < b.first; })->first;
  std::vector<double> probs(c.size());
  double sum = 0;
  for (size_t i = 0; i < c.size(); ++i) sum += probs[i] = std::exp(static_cast<double>(c[i].first) - mx);
  for (auto& p : probs) p /= sum;
  size_t keep = probs.size();
  if (row.top_p < 1.0f) {  // smallest prefix whose mass reaches top_p
    double cum = 0;
    size_t n = 0;
    while (n < probs.size() && cum < row.top_p) cum += probs[n++];
    keep = std::max<size_t>(n, 1);
  }
  if (row.min_p > 0.0f) {  // probs[0] is the largest once sorted
    const double threshold = row.min_p * probs[0];
    size_t n = 1;
    while (n < keep && probs[n] >= threshold) ++n;
    keep = n;
  }
  double kept_mass = 0;
  for (size_t i = 0; i < keep; ++i) kept_mass += probs[i];
  const double u = row.uniform * kept_mass;
  double cum = 0;
  for (size_t i = 0; i < keep; ++i) {
    cum += probs[i];
    if (u < cum) return c[i].second;
  }
  return c[keep - 1].second;
}

}  // namespace brickserve
