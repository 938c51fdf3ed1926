// The brick registry: names -> loaded bricks, while traffic flows.
//
// Requests resolve their brick names once, at admission (Acquire), and hold the bricks by
// shared_ptr until they end, so Unload and Load-over-an-existing-name (an update: load the new
// version, swap, the old one is freed when its last request ends) never change a request in flight.
// A memory budget bounds the bricks' device memory: when a load would exceed it, idle bricks (no
// request holds them) are evicted least recently used first; an evicted brick keeps its entry and
// is reloaded from its path on its next use.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "bricks/brick.h"
#include "engine/serving/engine_stats.h"

namespace brickserve {

enum class BrickState {
  kReady,    // resident, usable
  kEvicted,  // memory freed under the budget; reloaded from its path on next use
};
absl::string_view BrickStateName(BrickState s);  // "ready", "evicted"

// What the admin API reports of a brick.
struct BrickStatus {
  std::string name, path, sha256, version, base_model;
  BrickKind kind = BrickKind::kLora;
  std::vector<std::string> plugs_into;
  size_t size_bytes = 0;
  BrickState state = BrickState::kReady;
  std::chrono::system_clock::time_point load_time;
  uint64_t requests_served = 0;
  bool idle = true;  // no request holds it
};

struct BrickRegistryOptions {
  size_t memory_budget_bytes = 0;  // 0: no budget
};

// Counters for the metrics endpoint.
struct BrickRegistryStats {
  uint64_t loads = 0, load_failures = 0, unloads = 0, evictions = 0, reloads = 0;
  size_t resident_bytes = 0;  // device memory of every live brick, old versions still in use included
  int bricks_ready = 0, bricks_evicted = 0;
  std::map<std::string, uint64_t> load_failures_by_brick;  // by the name a load or reload was for
  LatencyHistogram::Snapshot load_seconds;  // successful loads and reloads: read, hash, validate, bind
};

// Loads the brick at `path` (any kind), already checked against the base model.
using BrickLoader = std::function<absl::StatusOr<std::shared_ptr<Brick>>(const std::string& path)>;

class BrickRegistry {
 public:
  BrickRegistry(BrickLoader loader, BrickRegistryOptions options);
  ~BrickRegistry();

  // Loads `path` as `name`, replacing a brick of that name. With `expected_sha256`, refuses a file
  // whose digest differs (INVALID_ARGUMENT). A failure leaves the registry (and any brick already
  // named so) unchanged.
  absl::StatusOr<BrickStatus> Load(const std::string& name, const std::string& path,
                                   const std::string& expected_sha256 = "");
  // Removes the name; requests holding the brick finish with it. NOT_FOUND when unknown.
  absl::Status Unload(const std::string& name);
  absl::StatusOr<BrickStatus> Get(const std::string& name) const;
  std::vector<BrickStatus> List() const;  // by name

  // Resolves a request's brick names (reloading evicted ones) and counts the request as served by
  // each. NOT_FOUND names the first unknown brick.
  absl::StatusOr<std::vector<std::shared_ptr<const Brick>>> Acquire(std::span<const std::string> names);

  BrickRegistryStats stats() const;
  size_t memory_budget_bytes() const { return options_.memory_budget_bytes; }

 private:
  struct Entry;
  absl::StatusOr<std::shared_ptr<Brick>> LoadChecked(const std::string& path, const std::string& expected_sha256);
  // Makes room for `incoming` bytes; called with mu_ held. `keep` is never evicted.
  absl::Status MakeRoom(size_t incoming, const Entry* keep);
  BrickStatus StatusOf(const std::string& name, const Entry& e) const;
  size_t ResidentBytes() const;  // mu_ held

  const BrickLoader loader_;
  const BrickRegistryOptions options_;
  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<Entry>> entries_;
  uint64_t use_clock_ = 0;  // LRU order
  BrickRegistryStats counters_;
  LatencyHistogram load_seconds_;
  // Every brick loaded and not yet destroyed (evicted, unloaded or replaced ones live on while
  // requests hold them): resident memory is measured from these, not assumed.
  mutable std::vector<std::weak_ptr<const Brick>> live_;
};

}  // namespace brickserve
