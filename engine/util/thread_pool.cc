#include "engine/util/thread_pool.h"

#include <algorithm>
#include <chrono>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define BS_CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define BS_CPU_RELAX() asm volatile("yield")
#else
#define BS_CPU_RELAX() ((void)0)
#endif

namespace brickserve {
namespace {

// How long an idle worker spins before it blocks. Longer than the serial gaps inside a forward
// pass (norms, sampling), short enough that an idle server sleeps at once.
constexpr auto kSpinBeforeBlocking = std::chrono::microseconds(300);
// Chunks per thread in a loop: threads take them as they finish, so one slowed down (by other
// processes, or the server's own network threads) holds the others up by at most a chunk. Under
// serving load (bench/run_load_bench.sh, C = 16) 4 gave +3 % tokens/s over 1 (static halves); alone
// (engine_bench --batch 16) -3 %: the smaller ranges cost a little where nothing interferes.
constexpr size_t kChunksPerThread = 4;

}  // namespace

ThreadPool::ThreadPool(int num_threads) {
  if (num_threads <= 0) num_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  num_threads_ = num_threads;
  for (int i = 1; i < num_threads_; ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true);
  }
  work_cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::RunChunks() {
  for (;;) {
    const size_t c = next_chunk_.fetch_add(1, std::memory_order_relaxed);
    if (c >= chunks_) return;
    const size_t begin = n_ * c / chunks_, end = n_ * (c + 1) / chunks_;
    if (begin < end) (*fn_)(begin, end);
  }
}

void ThreadPool::ParallelFor(size_t n, size_t grain, const std::function<void(size_t, size_t)>& fn) {
  if (n == 0) return;
  grain = std::max<size_t>(grain, 1);
  const size_t chunks = std::min<size_t>(kChunksPerThread * num_threads_, (n + grain - 1) / grain);
  if (chunks <= 1 || num_threads_ <= 1) {
    fn(0, n);
    return;
  }
  fn_ = &fn;
  n_ = n;
  chunks_ = chunks;
  next_chunk_.store(0, std::memory_order_relaxed);
  // Every worker acknowledges every loop, even one with no chunk left for it, so none can still be
  // reading fn_/n_/chunks_ when the next loop overwrites them.
  pending_.store(num_threads_ - 1, std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_seq_cst);
  // A worker that went to sleep registered in sleepers_ before its last look at generation_, so
  // either it sees the bump or we see it here (both seq_cst) and wake it.
  if (sleepers_.load(std::memory_order_seq_cst) > 0) {
    std::lock_guard<std::mutex> lock(mu_);
    work_cv_.notify_all();
  }
  RunChunks();
  // Threads take chunks as they free up, so the workers finish within a chunk of us: spin, then yield.
  for (int i = 0; pending_.load(std::memory_order_acquire) != 0; ++i) {
    if (i < 4096) BS_CPU_RELAX();
    else std::this_thread::yield();
  }
  fn_ = nullptr;
}

bool ThreadPool::AwaitWork(uint64_t seen) {
  const auto spin_until = std::chrono::steady_clock::now() + kSpinBeforeBlocking;
  for (int i = 0;; ++i) {
    if (generation_.load(std::memory_order_acquire) != seen) return true;
    if (stop_.load(std::memory_order_relaxed)) return false;
    BS_CPU_RELAX();
    if ((i & 63) == 63 && std::chrono::steady_clock::now() >= spin_until) break;
  }
  std::unique_lock<std::mutex> lock(mu_);
  sleepers_.fetch_add(1, std::memory_order_seq_cst);
  work_cv_.wait(lock, [&] { return stop_.load() || generation_.load(std::memory_order_seq_cst) != seen; });
  sleepers_.fetch_sub(1, std::memory_order_relaxed);
  return !stop_.load();
}

void ThreadPool::WorkerLoop() {
  uint64_t seen = 0;
  while (AwaitWork(seen)) {
    seen = generation_.load(std::memory_order_acquire);
    RunChunks();
    pending_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

}  // namespace brickserve
