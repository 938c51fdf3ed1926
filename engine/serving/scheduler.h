// Iteration-level (continuous) batching over the paged KV cache.
//
// One thread owns the model. Every step it builds a batch: one row for each running request that
// is decoding, then prompt chunks of the requests still prefilling with the rest of the token
// budget, then newly admitted requests (highest priority first, then oldest). Finished requests
// leave at once; new ones join at the next step. When the KV pool runs dry the lowest-priority,
// youngest request is preempted: its blocks are freed and it later recomputes from its tokens,
// with its sampler state kept, so its output is the same as if it had never been interrupted.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_set>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/kv/block_pool.h"
#include "engine/model/llama_model.h"
#include "engine/serving/engine_stats.h"
#include "engine/serving/sequence.h"
#include "engine/serving/step_cost_model.h"

namespace brickserve {

struct SchedulerOptions {
  int max_batch_tokens = 512;      // rows per step (decode rows plus prefill chunks)
  int max_running = 64;            // requests in the running batch
  int prefill_chunk_tokens = 0;    // prompt rows per step while requests decode; 0 = no cap
  double max_step_ms = 0;          // predicted step time while requests decode; 0 = no target
  // Without max_step_ms: the step time target as a multiple of a lone decode step's predicted
  // time, so the target follows the host and model; 0 = none.
  double max_step_ratio = 0;
  int max_queued_requests = 256;   // waiting requests before RESOURCE_EXHAUSTED
  int64_t max_queued_tokens = 0;   // prompt tokens waiting before RESOURCE_EXHAUSTED; 0 = no limit
  int max_context = 0;
};

class Scheduler {
 public:
  Scheduler(LlamaModel* model, KvCache* cache, BlockPool* pool, const Tokenizer* tokenizer,
            const std::vector<int32_t>* eos_ids, const SchedulerOptions& options);
  ~Scheduler();  // ends every request with UNAVAILABLE and stops the thread
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues a validated request. RESOURCE_EXHAUSTED when the queue is full (by requests or by
  // tokens), UNAVAILABLE after StopAccepting. On success `on_done` runs exactly once.
  absl::StatusOr<uint64_t> Submit(GenerationRequest request, SubmitOptions options, StreamCallback on_piece,
                                  DoneCallback on_done);
  // Ends a request as cancelled at the next step boundary (queued or running).
  void Cancel(uint64_t id);
  // From now on Submit answers UNAVAILABLE; accepted requests go on.
  void StopAccepting();
  // Ends every queued and running request with `status` (the end of a drain's grace period).
  void AbortAll(const absl::Status& status);
  // Waits until no request is queued or running, or `deadline`; returns whether idle.
  bool WaitUntilIdle(Clock::time_point deadline);
  // Runs `task` on the scheduler thread between steps, with the model to itself.
  absl::Status RunExclusive(std::function<absl::Status()> task);

  EngineStats Stats() const;

 private:
  struct Task {
    std::function<absl::Status()> fn;
    absl::Status result;
    bool done = false;
  };
  struct Planned {
    Sequence* seq;
    int tokens;
  };
  using SeqPtr = std::unique_ptr<Sequence>;

  void Loop();
  // One iteration: stop checks, scheduling, the forward pass, sampling. Returns false when there
  // was nothing it could run.
  bool Step();
  void CollectStopped(std::vector<SeqPtr>* done);
  // Preempts lower-priority running requests that stand in the way of the first waiting one.
  void PreemptForPriority();
  void ScheduleRunning(int* budget, std::vector<Planned>* plan, bool* preempted);
  void Admit(int* budget, std::vector<Planned>* plan);
  absl::Status RunBatch(const std::vector<Planned>& plan, std::vector<SeqPtr>* done);

  // The last running request not in `plan` (nullptr if none): the next to preempt.
  Sequence* PreemptionVictim(const std::vector<Planned>& plan) const;
  void Preempt(Sequence* seq);
  void ReleaseBlocks(Sequence& seq);
  // Takes cached full blocks for the start of a request being admitted.
  void MatchPrefix(Sequence& seq);
  void PublishFullBlocks(Sequence& seq);
  SeqPtr TakeRunning(Sequence* seq);
  void InsertRunning(SeqPtr seq);
  void InsertWaiting(SeqPtr seq);  // caller holds mu_
  void Deliver(std::vector<SeqPtr>& done, const absl::Status& status = absl::OkStatus());
  void UpdateGauges();
  // The time target of a step while requests decode, in seconds; 0 = none (or not learned yet).
  double StepTarget() const;

  LlamaModel* const model_;
  KvCache* const cache_;
  BlockPool* const pool_;
  const Tokenizer* const tokenizer_;
  const std::vector<int32_t>* const eos_ids_;
  const SchedulerOptions options_;
  const int watermark_blocks_;  // kept free at admission so running requests can grow a while

  mutable std::mutex mu_;
  std::condition_variable cv_;       // work arrived
  std::condition_variable idle_cv_;  // a request finished
  std::deque<SeqPtr> waiting_;       // by priority, then arrival; guarded by mu_
  int64_t waiting_tokens_ = 0;
  std::unordered_set<uint64_t> cancelled_;
  std::deque<Task*> tasks_;
  std::condition_variable task_cv_;
  absl::Status abort_status_;        // non-OK: end everything with it
  bool accepting_ = true;
  bool stopping_ = false;
  uint64_t next_id_ = 1;
  int active_ = 0;                   // queued + running, guarded by mu_

  std::vector<SeqPtr> running_;      // scheduler thread only; by priority, then arrival

  mutable std::mutex stats_mu_;
  EngineStats stats_;                // counters and gauges, guarded by stats_mu_
  LatencyHistogram ttft_, itl_, queue_time_, step_time_;
  StepCostModel step_cost_;          // scheduler thread only

  std::thread thread_;
};

}  // namespace brickserve
