// The generation queue: one worker, first come first served, bounded, and jobs that leave before
// running (Remove, Shutdown) never run.
#include "server/generation_queue.h"

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace brickserve {
namespace {

using namespace std::chrono_literals;

// Records what happened to each job; a job can be made to block until released, to hold the worker.
class Log {
 public:
  void Add(const std::string& event) {
    std::lock_guard<std::mutex> lock(mu_);
    events_.push_back(event);
    cv_.notify_all();
  }
  // Waits (bounded) until `n` events were recorded.
  bool WaitFor(size_t n) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, 10s, [&] { return events_.size() >= n; });
  }
  std::vector<std::string> events() {
    std::lock_guard<std::mutex> lock(mu_);
    return events_;
  }
  void Release() {
    std::lock_guard<std::mutex> lock(mu_);
    released_ = true;
    cv_.notify_all();
  }
  void WaitForRelease() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, 10s, [&] { return released_; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> events_;
  bool released_ = false;
};

class TestJob : public QueuedJob {
 public:
  TestJob(std::string name, Log* log, bool block = false) : name_(std::move(name)), log_(log), block_(block) {}
  void Run() override {
    log_->Add("start " + name_);
    if (block_) log_->WaitForRelease();
    log_->Add("run " + name_);
  }
  void Abandon() override { log_->Add("abandon " + name_); }

 private:
  std::string name_;
  Log* log_;
  bool block_;
};

TEST(GenerationQueue, RunsJobsInOrder) {
  Log log;
  TestJob a("a", &log), b("b", &log), c("c", &log);
  GenerationQueue queue(8);
  ASSERT_TRUE(queue.Submit(&a).ok());
  ASSERT_TRUE(queue.Submit(&b).ok());
  ASSERT_TRUE(queue.Submit(&c).ok());
  ASSERT_TRUE(log.WaitFor(6));
  EXPECT_EQ(log.events(), (std::vector<std::string>{"start a", "run a", "start b", "run b", "start c", "run c"}));
}

TEST(GenerationQueue, RemovedJobNeverRunsAndRunningJobCannotBeRemoved) {
  Log log;
  TestJob blocker("blocker", &log, true), waiting("waiting", &log), last("last", &log);
  GenerationQueue queue(8);
  ASSERT_TRUE(queue.Submit(&blocker).ok());
  ASSERT_TRUE(log.WaitFor(1));  // the worker is inside blocker
  ASSERT_TRUE(queue.Submit(&waiting).ok());
  ASSERT_TRUE(queue.Submit(&last).ok());
  EXPECT_EQ(queue.queued(), 2);
  EXPECT_FALSE(queue.Remove(&blocker));
  EXPECT_TRUE(queue.Remove(&waiting));
  EXPECT_FALSE(queue.Remove(&waiting));
  EXPECT_EQ(queue.queued(), 1);
  log.Release();
  ASSERT_TRUE(log.WaitFor(4));
  EXPECT_EQ(log.events(), (std::vector<std::string>{"start blocker", "run blocker", "start last", "run last"}));
}

TEST(GenerationQueue, FullQueueRefusesWithResourceExhausted) {
  Log log;
  TestJob blocker("blocker", &log, true), a("a", &log), b("b", &log);
  GenerationQueue queue(1);
  ASSERT_TRUE(queue.Submit(&blocker).ok());
  ASSERT_TRUE(log.WaitFor(1));
  ASSERT_TRUE(queue.Submit(&a).ok());
  const absl::Status full = queue.Submit(&b);
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(std::string(full.message()).find("limits.max_queued_requests = 1"), std::string::npos) << full;
  log.Release();
  ASSERT_TRUE(log.WaitFor(4));
}

TEST(GenerationQueue, ShutdownAbandonsWaitingJobsAndFinishesTheRunningOne) {
  Log log;
  TestJob blocker("blocker", &log, true), waiting("waiting", &log), late("late", &log);
  GenerationQueue queue(8);
  ASSERT_TRUE(queue.Submit(&blocker).ok());
  ASSERT_TRUE(log.WaitFor(1));
  ASSERT_TRUE(queue.Submit(&waiting).ok());
  std::thread release([&] {
    log.WaitFor(2);  // Shutdown abandoned the waiting job; now let the running one end
    log.Release();
  });
  queue.Shutdown();
  release.join();
  EXPECT_EQ(log.events(), (std::vector<std::string>{"start blocker", "abandon waiting", "run blocker"}));
  EXPECT_EQ(queue.Submit(&late).code(), absl::StatusCode::kUnavailable);
  queue.Shutdown();  // idempotent
}

}  // namespace
}  // namespace brickserve
