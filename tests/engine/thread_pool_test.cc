#include "engine/util/thread_pool.h"

#include <atomic>
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

}  // namespace
}  // namespace brickserve
