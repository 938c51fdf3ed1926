// Runs generation jobs on one worker thread, first come first served. One worker is enough because
// Engine::Generate serialises requests internally; the queue keeps gRPC threads free and lets a
// request that is cancelled while waiting leave at once instead of blocking on the engine's lock.
#pragma once

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "absl/status/status.h"

namespace brickserve {

class QueuedJob {
 public:
  virtual ~QueuedJob() = default;
  // On the worker thread. The job must stay alive until Run() or Abandon() has returned.
  virtual void Run() = 0;
  // Instead of Run(), when the job leaves the queue without running (queue shut down). Not called
  // for a job taken out with Remove(): the caller handles that itself.
  virtual void Abandon() = 0;
};

class GenerationQueue {
 public:
  // `max_queued`: jobs waiting (besides the one running) before Submit refuses more.
  explicit GenerationQueue(int max_queued);
  ~GenerationQueue();  // Shutdown()
  GenerationQueue(const GenerationQueue&) = delete;
  GenerationQueue& operator=(const GenerationQueue&) = delete;

  // RESOURCE_EXHAUSTED when the queue is full, UNAVAILABLE after Shutdown().
  absl::Status Submit(QueuedJob* job);
  // Takes a job out if it has not started; true if it did (the job will then never run).
  bool Remove(QueuedJob* job);
  int queued() const;

  // Refuses new jobs from now on (UNAVAILABLE); the queued and running ones go on.
  void StopAccepting();
  // Abandons the waiting jobs, waits for the running one and stops the worker. Idempotent.
  void Shutdown();

 private:
  void Work();

  const int max_queued_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<QueuedJob*> jobs_;
  bool accepting_ = true;
  bool stopping_ = false;
  std::thread worker_;
};

}  // namespace brickserve
