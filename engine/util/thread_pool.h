// A fixed pool of worker threads for data-parallel loops (the CPU backend's kernels).
#pragma once

#include <condition_variable>
#include <cstddef>
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
  // parallel; returns when all are done. Not reentrant: call it from one thread at a time.
  void ParallelFor(size_t n, size_t grain, const std::function<void(size_t, size_t)>& fn);

 private:
  void WorkerLoop(int worker_index);
  void RunShard(int shard);

  int num_threads_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  const std::function<void(size_t, size_t)>* fn_ = nullptr;
  size_t n_ = 0;
  int shards_ = 0;
  int pending_ = 0;
  unsigned long generation_ = 0;
  bool stop_ = false;
};

}  // namespace brickserve
