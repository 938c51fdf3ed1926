// Watches a directory of bricks: each subdirectory is a brick named after it. New ones are
// loaded, changed ones (their files' sizes or modification times) reloaded as an update, removed
// ones unloaded. Polling, not inotify: it also works on network and Kubernetes volume mounts,
// whose updates (a symlink swap) inotify does not report reliably.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "bricks/registry.h"

namespace brickserve {

class BrickDirWatcher {
 public:
  // `log` receives one line per load, update, unload or failure.
  BrickDirWatcher(BrickRegistry* registry, std::string dir, std::chrono::milliseconds period,
                  std::function<void(const std::string&)> log);
  ~BrickDirWatcher();  // stops the thread

  // One scan, now (also what the thread runs every period). Returns the first failure, if any;
  // a failed brick is retried only once its files change.
  absl::Status ScanOnce();
  void Start();

 private:
  struct Seen {
    std::string signature;  // sizes and modification times of the brick's files
    bool loaded = false;
  };
  BrickRegistry* const registry_;
  const std::string dir_;
  const std::chrono::milliseconds period_;
  const std::function<void(const std::string&)> log_;
  std::mutex scan_mu_;
  std::map<std::string, Seen> seen_;  // by brick name
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace brickserve
