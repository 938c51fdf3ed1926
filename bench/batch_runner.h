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

#include "engine/engine.h"

namespace brickserve {

using Clock = std::chrono::steady_clock;
inline double Since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

inline double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct RunResult {
  double tok_per_s = 0, decode_tok_per_s = 0;
};

inline RunResult RunBatch(Engine& engine, const std::vector<GenerationRequest>& requests, const char* who) {
  std::mutex mu;
  std::vector<Clock::time_point> first(requests.size());
  std::vector<int> tokens(requests.size(), 0);
  std::vector<std::vector<Clock::time_point>> times(requests.size());
  std::vector<std::promise<void>> done(requests.size());
  const Clock::time_point t0 = Clock::now();
  for (size_t i = 0; i < requests.size(); ++i) {
    auto on_piece = [&, i](const StreamPiece& p) {
      std::lock_guard<std::mutex> lock(mu);
      for (size_t k = 0; k < p.tokens.size(); ++k) times[i].push_back(Clock::now());
      return true;
    };
    auto st = engine.Submit(requests[i], {}, on_piece, [&, i](absl::StatusOr<GenerationResult> r) {
      if (!r.ok()) std::fprintf(stderr, "%s: %s\n", who, r.status().ToString().c_str());
      else tokens[i] = r->completion_tokens;
      done[i].set_value();
    });
    if (!st.ok()) {
      std::fprintf(stderr, "%s: %s\n", who, st.status().ToString().c_str());
      std::exit(1);
    }
  }
  for (auto& d : done) d.get_future().wait();
  const double wall = Since(t0);
  RunResult r;
  int total = 0;
  Clock::time_point last_first = t0, end = t0;
  for (size_t i = 0; i < requests.size(); ++i) {
    total += tokens[i];
    if (!times[i].empty()) {
      last_first = std::max(last_first, times[i].front());
      end = std::max(end, times[i].back());
    }
  }
  int after = 0;
  for (const auto& t : times) after += static_cast<int>(std::count_if(t.begin(), t.end(), [&](auto x) { return x > last_first; }));
  r.tok_per_s = total / wall;
  r.decode_tok_per_s = after / std::chrono::duration<double>(end - last_first).count();
  return r;
}

}  // namespace brickserve
