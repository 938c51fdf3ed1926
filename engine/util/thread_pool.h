// A fixed pool of worker threads for data-parallel loops (the CPU backend's kernels).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace brickserve {

class ThreadPool {
 public:
  // `num_threads` <= 0 means one per hardware thread. The calling thread takes part in every
  // ParallelFor, so a pool of N threads starts N-1 workers.
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return num_threads_; }

  // Splits [0, n) into contiguous ranges, at least `grain` long, and runs fn(begin, end) on them in
  // parallel; returns when all are done. The ranges depend only on n, grain and the pool's size
  // (which thread runs which one does not), so results that depend on them are reproducible. Not
  // reentrant: call it from one thread at a time.
  void ParallelFor(size_t n, size_t grain, const std::function<void(size_t, size_t)>& fn);

 private:
  void WorkerLoop();
  // Runs chunks of the current loop until none is left.
  void RunChunks();
  // Waits until generation_ differs from `seen`: spins first, because a decode step issues a
  // few hundred short loops back to back and waking a blocked thread costs tens of microseconds.
  // Returns false when the pool is stopping.
  bool AwaitWork(uint64_t seen);

  int num_threads_;
  std::vector<std::thread> workers_;

  // The current loop; written by ParallelFor before generation_ is bumped (release), read by the
  // workers after they see the bump (acquire).
  const std::function<void(size_t, size_t)>* fn_ = nullptr;
  size_t n_ = 0;
  size_t chunks_ = 0;
  std::atomic<size_t> next_chunk_{0};  // the next chunk to take
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};  // workers that have not yet finished the current loop

  // Blocking, for workers that spun without seeing work.
  std::mutex mu_;
  std::condition_variable work_cv_;
  std::atomic<int> sleepers_{0};
  std::atomic<bool> stop_{false};
};

}  // namespace brickserve
