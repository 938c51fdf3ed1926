// Request counters behind GetServerStats. A request counts as active from acceptance until its
// state is freed, so tests (and operators) can see that a cancelled request really let go.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>

#include "brickserve/v1/inference.pb.h"

namespace brickserve {

class RequestStats {
 public:
  enum class Outcome { kCompleted, kCancelled, kDeadlineExceeded, kFailed };

  RequestStats() : start_(std::chrono::steady_clock::now()) {}

  // A generation request passed validation and is about to be queued.
  void Accepted() {
    total_.fetch_add(1);
    active_.fetch_add(1);
  }
  // Accepted() was called but the queue refused the request: it counts as rejected instead.
  void Unaccepted() {
    total_.fetch_sub(1);
    active_.fetch_sub(1);
    rejected_.fetch_add(1);
  }
  void Rejected() { rejected_.fetch_add(1); }
  // The request's state is freed.
  void Finished(Outcome outcome, int64_t generated_tokens);

  void Fill(v1::GetServerStatsResponse* out) const;

  // Waits until no request is active, or `deadline`; returns whether none is (graceful shutdown).
  bool WaitUntilIdle(std::chrono::steady_clock::time_point deadline);

 private:
  const std::chrono::steady_clock::time_point start_;
  std::atomic<int64_t> active_{0}, total_{0}, completed_{0}, cancelled_{0}, deadline_{0}, failed_{0},
      rejected_{0}, tokens_{0};
  std::mutex idle_mu_;  // only for WaitUntilIdle
  std::condition_variable idle_cv_;
};

}  // namespace brickserve
