#include "engine/util/thread_pool.h"

#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace brickserve {
namespace {

TEST(ThreadPool, CoversEveryIndexExactlyOnce) {
  ThreadPool pool(3);
  for (size_t n : {0u, 1u, 2u, 7u, 1000u}) {
    for (size_t grain : {1u, 4u, 64u}) {
      std::vector<std::atomic<int>> hits(n);
      pool.ParallelFor(n, grain, [&](size_t b, size_t e) {
        for (size_t i = b; i < e; ++i) hits[i]++;
      });
      for (size_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "n=" << n << " grain=" << grain << " i=" << i;
    }
  }
}

TEST(ThreadPool, ManyConsecutiveCallsDoNotLoseWork) {
  ThreadPool pool(2);
  std::atomic<long> sum{0};
  for (int round = 0; round < 2000; ++round) {
    pool.ParallelFor(8, 1, [&](size_t b, size_t e) { sum += static_cast<long>(e - b); });
  }
  EXPECT_EQ(sum.load(), 2000 * 8);
}

// Loops of varying width, some after the workers have given up spinning and blocked: nothing is
// lost, run twice, or run with a stale loop's bounds.
TEST(ThreadPool, WorkersWakeFromSleepAndVaryingShardCounts) {
  ThreadPool pool(5);
  for (int round = 0; round < 300; ++round) {
    const size_t n = 1 + (round * 7) % 13;  // 1..13 items: 1 to 5 shards
    if (round % 50 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(3));
    std::vector<std::atomic<int>> hits(n);
    pool.ParallelFor(n, 1 + round % 3, [&](size_t b, size_t e) {
      for (size_t i = b; i < e; ++i) hits[i]++;
    });
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "round " << round << " i=" << i;
  }
}

// Which thread runs a range varies; the ranges themselves do not (kernels whose rounding depends on
// where a range starts stay reproducible), and a slow range does not stop the others from going on.
TEST(ThreadPool, RangesDependOnlyOnTheLoopNotOnTiming) {
  ThreadPool pool(3);
  for (size_t n : {5u, 64u, 1000u}) {
    std::set<std::pair<size_t, size_t>> first;
    for (int round = 0; round < 20; ++round) {
      std::mutex mu;
      std::set<std::pair<size_t, size_t>> ranges;
      pool.ParallelFor(n, 2, [&](size_t b, size_t e) {
        if (b == 0 && round % 2 == 1) std::this_thread::sleep_for(std::chrono::milliseconds(2));
        std::lock_guard<std::mutex> lock(mu);
        ranges.insert({b, e});
      });
      if (round == 0) first = ranges;
      ASSERT_EQ(ranges, first) << "n=" << n << " round " << round;
    }
    if (n >= 64) EXPECT_GT(first.size(), 3u) << "more ranges than threads, so a fast thread can take another";
  }
}

}  // namespace
}  // namespace brickserve
