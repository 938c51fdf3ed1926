// What the scheduler counts, as a plain snapshot: the server's GetServerStats and the metrics
// endpoint publish it. Counters only grow; gauges are the value at snapshot time.
#pragma once

#include <array>
#include <cstdint>
#include <mutex>

#include "engine/modules/module_trace.h"

namespace brickserve {

// A fixed-bucket latency histogram in the Prometheus style (cumulative at export time).
class LatencyHistogram {
 public:
  // Upper bounds in seconds; the last bucket is +Inf. Token gaps are milliseconds; a first token
  // behind a long queue on a CPU can take minutes (vLLM's buckets reach similar ranges).
  static constexpr std::array<double, 19> kBounds = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075,
                                                     0.1,   0.25,   0.5,   0.75, 1.0,   2.5,  5.0,
                                                     10.0,  30.0,   60.0,  120.0, 300.0};
  struct Snapshot {
    std::array<uint64_t, kBounds.size() + 1> counts{};  // per bucket, not cumulative; last = +Inf
    uint64_t count = 0;
    double sum = 0;
    // The value below which `q` of the observations fall (bucket upper bound; 0 if empty).
    double Quantile(double q) const;
  };

  void Observe(double seconds);
  Snapshot Get() const;

 private:
  mutable std::mutex mu_;
  Snapshot data_;
};

struct EngineStats {
  // Gauges.
  int queued_requests = 0;
  int64_t queued_prompt_tokens = 0;
  int running_requests = 0;
  int kv_blocks_total = 0;
  int kv_blocks_in_use = 0;   // referenced by a running request
  int kv_blocks_cached = 0;   // holding reusable prefix KV (in use or evictable)
  int kv_block_size = 0;
  double step_time_target_s = 0;  // what prompt chunks are sized to while requests decode; 0 = none
  // Counters.
  uint64_t requests_admitted = 0;   // entered the running batch for the first time
  uint64_t requests_finished = 0;
  uint64_t requests_rejected = 0;   // refused at submission (queue full, draining)
  uint64_t preemptions = 0;
  uint64_t prompt_tokens = 0;       // of admitted requests
  uint64_t prefix_cache_hit_tokens = 0;
  uint64_t prefill_tokens = 0;      // tokens run through the model to fill the cache
  uint64_t generated_tokens = 0;
  uint64_t steps = 0;
  LatencyHistogram::Snapshot time_to_first_token;
  LatencyHistogram::Snapshot inter_token_latency;  // time per output token after the first
  LatencyHistogram::Snapshot queue_time;           // submission to first admission
  LatencyHistogram::Snapshot step_time;            // one forward step of the running batch
  // Tokens per module and layer over every finished request (empty without a module set): the
  // usage histogram that shows which modules a workload never needs.
  ModuleTrace module_usage;
};

}  // namespace brickserve
