#include "server/request_stats.h"

namespace brickserve {

void RequestStats::Finished(Outcome outcome, int64_t generated_tokens) {
  tokens_.fetch_add(generated_tokens);
  switch (outcome) {
    case Outcome::kCompleted: completed_.fetch_add(1); break;
    case Outcome::kDeadlineExceeded: deadline_.fetch_add(1); [[fallthrough]];
    case Outcome::kCancelled: cancelled_.fetch_add(1); break;
    case Outcome::kFailed: failed_.fetch_add(1); break;
  }
  // Last, so that a reader who sees the request gone also sees its outcome counted.
  if (active_.fetch_sub(1) == 1) {
    std::lock_guard<std::mutex> lock(idle_mu_);
    idle_cv_.notify_all();
  }
}

bool RequestStats::WaitUntilIdle(std::chrono::steady_clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(idle_mu_);
  return idle_cv_.wait_until(lock, deadline, [this] { return active_.load() == 0; });
}

void RequestStats::Fill(v1::GetServerStatsResponse* out) const {
  out->set_active_requests(active_.load());
  out->set_total_requests(total_.load());
  out->set_completed_requests(completed_.load());
  out->set_cancelled_requests(cancelled_.load());
  out->set_deadline_exceeded_requests(deadline_.load());
  out->set_failed_requests(failed_.load());
  out->set_rejected_requests(rejected_.load());
  out->set_generated_tokens(tokens_.load());
  out->set_uptime_s(std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count());
}

}  // namespace brickserve
