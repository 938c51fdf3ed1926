#include "engine/util/thread_pool.h"

#include <atomic>
#include <chrono>
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

}  // namespace
}  // namespace brickserve
