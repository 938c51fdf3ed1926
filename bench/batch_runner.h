// One batch of generation requests submitted at once to an Engine, timed the way the benchmarks
// report it (lora_bench, module_bench).
//
//   throughput   generated tokens / wall time (prefill included)
//   decode       after the last request's first token: (tokens generated after it) / time
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <mutex>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/engine.h"

namespace brickserve {

using Clock = std::chrono::steady_clock;
inline double Since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

inline double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// One timed batch. `tokens` and `errors` are per request (a failed request generated 0 tokens).
struct BatchTiming {
  double tok_per_s = 0;           // all generated tokens / wall time (prefill included)
  double decode_tok_per_s = 0;    // tokens after the last request's first token / time from then to the last
  double wall_s = 0;
  double last_first_token_s = 0;  // from submission to the last request's first token
  int total_tokens = 0;
  std::vector<int> tokens;
  std::vector<absl::Status> errors;
};

// Submits every request at once and waits for them all. A refused submission is returned once the
// requests already queued have finished (their callbacks use this frame).
inline absl::StatusOr<BatchTiming> TimeBatch(Engine& engine, const std::vector<GenerationRequest>& requests) {
  const size_t n = requests.size();
  std::mutex mu;
  BatchTiming t;
  t.tokens.assign(n, 0);
  t.errors.assign(n, absl::OkStatus());
  std::vector<std::vector<Clock::time_point>> times(n);
  std::vector<std::promise<void>> done(n);
  const Clock::time_point t0 = Clock::now();
  for (size_t i = 0; i < n; ++i) {
    auto on_piece = [&, i](const StreamPiece& p) {
      const Clock::time_point now = Clock::now();
      std::lock_guard<std::mutex> lock(mu);
      for (size_t k = 0; k < p.tokens.size(); ++k) times[i].push_back(now);
      return true;
    };
    auto on_done = [&, i](absl::StatusOr<GenerationResult> r) {
      {
        std::lock_guard<std::mutex> lock(mu);
        if (!r.ok()) t.errors[i] = r.status();
        else t.tokens[i] = r->completion_tokens;
      }
      done[i].set_value();
    };
    auto st = engine.Submit(requests[i], {}, on_piece, on_done);
    if (!st.ok()) {
      for (size_t j = 0; j < i; ++j) done[j].get_future().wait();
      return st.status();
    }
  }
  for (auto& d : done) d.get_future().wait();
  t.wall_s = Since(t0);
  Clock::time_point last_first = t0, end = t0;
  for (size_t i = 0; i < n; ++i) {
    t.total_tokens += t.tokens[i];
    if (!times[i].empty()) {
      last_first = std::max(last_first, times[i].front());
      end = std::max(end, times[i].back());
    }
  }
  int after = 0;
  for (const auto& ts : times) {
    after += static_cast<int>(std::count_if(ts.begin(), ts.end(), [&](auto x) { return x > last_first; }));
  }
  const double span = std::chrono::duration<double>(end - last_first).count();
  t.decode_tok_per_s = span > 0 ? after / span : 0;
  t.tok_per_s = t.total_tokens / t.wall_s;
  t.last_first_token_s = std::chrono::duration<double>(last_first - t0).count();
  return t;
}

struct RunResult {
  double tok_per_s = 0, decode_tok_per_s = 0;
};

// TimeBatch for the benchmarks that report and go on: failed requests are printed, a refused
// submission ends the process.
inline RunResult RunBatch(Engine& engine, const std::vector<GenerationRequest>& requests, const char* who) {
  absl::StatusOr<BatchTiming> t = TimeBatch(engine, requests);
  if (!t.ok()) {
    std::fprintf(stderr, "%s: %s\n", who, t.status().ToString().c_str());
    std::exit(1);
  }
  for (const absl::Status& e : t->errors) {
    if (!e.ok()) std::fprintf(stderr, "%s: %s\n", who, e.ToString().c_str());
  }
  return {t->tok_per_s, t->decode_tok_per_s};
}

}  // namespace brickserve
