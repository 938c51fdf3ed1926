#include "server/generation_queue.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace brickserve {

GenerationQueue::GenerationQueue(int max_queued) : max_queued_(max_queued), worker_([this] { Work(); }) {}

GenerationQueue::~GenerationQueue() { Shutdown(); }

absl::Status GenerationQueue::Submit(QueuedJob* job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!accepting_ || stopping_) return absl::UnavailableError("the server is shutting down");
    if (static_cast<int>(jobs_.size()) >= max_queued_) {
      return absl::ResourceExhaustedError(absl::StrCat(jobs_.size(), " requests are already waiting for the model (",
                                                       "limits.max_queued_requests = ", max_queued_, "); retry later"));
    }
    jobs_.push_back(job);
  }
  cv_.notify_one();
  return absl::OkStatus();
}

bool GenerationQueue::Remove(QueuedJob* job) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = std::find(jobs_.begin(), jobs_.end(), job);
  if (it == jobs_.end()) return false;
  jobs_.erase(it);
  return true;
}

int GenerationQueue::queued() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(jobs_.size());
}

void GenerationQueue::StopAccepting() {
  std::lock_guard<std::mutex> lock(mu_);
  accepting_ = false;
}

void GenerationQueue::Shutdown() {
  std::deque<QueuedJob*> abandoned;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ && !worker_.joinable()) return;
    stopping_ = true;
    abandoned.swap(jobs_);
  }
  cv_.notify_all();
  // Outside the lock: Abandon() may call back into Remove() (through a cancellation).
  for (QueuedJob* job : abandoned) job->Abandon();
  if (worker_.joinable() && worker_.get_id() != std::this_thread::get_id()) worker_.join();
}

void GenerationQueue::Work() {
  for (;;) {
    QueuedJob* job = nullptr;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
      if (jobs_.empty()) return;  // stopping
      job = jobs_.front();
      jobs_.pop_front();
    }
    job->Run();
  }
}

}  // namespace brickserve
