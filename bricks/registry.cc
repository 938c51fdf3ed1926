#include "bricks/registry.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "bricks/digest.h"
#include "engine/util/status_macros.h"

namespace brickserve {

absl::string_view BrickStateName(BrickState s) {
  switch (s) {
    case BrickState::kReady: return "ready";
    case BrickState::kEvicted: return "evicted";
  }
  return "unknown";
}

struct BrickRegistry::Entry {
  std::string path;
  std::shared_ptr<const Brick> brick;  // null while evicted
  // Kept from the last load, so an evicted brick still reports what it is.
  std::string sha256, version, base_model;
  BrickKind kind = BrickKind::kLora;
  std::vector<std::string> plugs_into;
  size_t size_bytes = 0;
  std::chrono::system_clock::time_point load_time;
  uint64_t requests_served = 0;
  uint64_t last_used = 0;
  bool idle() const { return brick == nullptr || brick.use_count() == 1; }
};

BrickRegistry::BrickRegistry(BrickLoader loader, BrickRegistryOptions options)
    : loader_(std::move(loader)), options_(options) {}
BrickRegistry::~BrickRegistry() = default;

absl::StatusOr<std::shared_ptr<Brick>> BrickRegistry::LoadChecked(const std::string& path,
                                                                 const std::string& expected_sha256) {
  const auto start = std::chrono::steady_clock::now();
  BS_ASSIGN_OR_RETURN(std::shared_ptr<Brick> brick, loader_(path));
  load_seconds_.Observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  if (!expected_sha256.empty() && absl::AsciiStrToLower(expected_sha256) != brick->sha256()) {
    return absl::InvalidArgumentError(absl::StrCat("sha256 of the brick at ", path, " is ", brick->sha256(),
                                                   ", not the expected ", expected_sha256));
  }
  if (options_.memory_budget_bytes > 0 && brick->size_bytes() > options_.memory_budget_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat("brick at ", path, " needs ", brick->size_bytes(),
                                                     " bytes, more than the whole brick memory budget of ",
                                                     options_.memory_budget_bytes, " bytes"));
  }
  return brick;
}

size_t BrickRegistry::ResidentBytes() const {
  size_t bytes = 0;
  std::erase_if(live_, [&](const std::weak_ptr<const Brick>& w) {
    std::shared_ptr<const Brick> b = w.lock();
    if (b == nullptr) return true;
    bytes += b->size_bytes();
    return false;
  });
  return bytes;
}

absl::Status BrickRegistry::MakeRoom(size_t incoming, const Entry* keep) {
  if (options_.memory_budget_bytes == 0) return absl::OkStatus();
  while (ResidentBytes() + incoming > options_.memory_budget_bytes) {
    Entry* victim = nullptr;
    for (auto& [name, e] : entries_) {
      if (e.get() == keep || e->brick == nullptr || !e->idle()) continue;
      if (victim == nullptr || e->last_used < victim->last_used) victim = e.get();
    }
    if (victim == nullptr) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "brick memory budget of ", options_.memory_budget_bytes, " bytes is full: ", ResidentBytes(),
          " bytes are held by bricks in use (or by old versions that running requests still hold), ", incoming,
          " more are needed"));
    }
    victim->brick.reset();
    ++counters_.evictions;
  }
  return absl::OkStatus();
}

absl::StatusOr<BrickStatus> BrickRegistry::Load(const std::string& name, const std::string& path,
                                                const std::string& expected_sha256) {
  // The slow part (reading, hashing, validating) runs without the lock: traffic goes on.
  absl::StatusOr<std::shared_ptr<Brick>> loaded = LoadChecked(path, expected_sha256);
  std::lock_guard<std::mutex> lock(mu_);
  if (!loaded.ok()) {
    ++counters_.load_failures;
    ++counters_.load_failures_by_brick[name];
    return loaded.status();
  }
  std::shared_ptr<Brick> brick = *std::move(loaded);
  auto& slot = entries_[name];
  const bool is_new = slot == nullptr;
  if (is_new) slot = std::make_unique<Entry>();
  Entry& e = *slot;
  // The entry's previous version may be evicted to make room; it stays live while requests hold it.
  std::shared_ptr<const Brick> previous = std::move(e.brick);
  // An idle previous version goes away with the swap, so its memory counts as free.
  const size_t freed = previous != nullptr && previous.use_count() == 1 ? previous->size_bytes() : 0;
  absl::Status room = MakeRoom(brick->size_bytes() > freed ? brick->size_bytes() - freed : 0, &e);
  if (!room.ok()) {
    if (is_new) {
      entries_.erase(name);
    } else {
      e.brick = std::move(previous);
    }
    ++counters_.load_failures;
    ++counters_.load_failures_by_brick[name];
    return room;
  }
  previous.reset();
  e.path = path;
  e.brick = brick;
  e.sha256 = brick->sha256();
  e.version = brick->version();
  e.base_model = brick->base_model();
  e.kind = brick->kind();
  e.plugs_into = brick->plugs_into();
  e.size_bytes = brick->size_bytes();
  e.load_time = std::chrono::system_clock::now();
  e.last_used = ++use_clock_;
  live_.push_back(brick);
  ++counters_.loads;
  return StatusOf(name, e);
}

absl::Status BrickRegistry::Unload(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(name);
  if (it == entries_.end()) return absl::NotFoundError(absl::StrCat("brick \"", name, "\" is not loaded"));
  entries_.erase(it);
  ++counters_.unloads;
  return absl::OkStatus();
}

BrickStatus BrickRegistry::StatusOf(const std::string& name, const Entry& e) const {
  BrickStatus s;
  s.name = name;
  s.path = e.path;
  s.sha256 = e.sha256;
  s.version = e.version;
  s.base_model = e.base_model;
  s.kind = e.kind;
  s.plugs_into = e.plugs_into;
  s.size_bytes = e.size_bytes;
  s.state = e.brick != nullptr ? BrickState::kReady : BrickState::kEvicted;
  s.load_time = e.load_time;
  s.requests_served = e.requests_served;
  s.idle = e.idle();
  return s;
}

absl::StatusOr<BrickStatus> BrickRegistry::Get(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(name);
  if (it == entries_.end()) return absl::NotFoundError(absl::StrCat("brick \"", name, "\" is not loaded"));
  return StatusOf(name, *it->second);
}

std::vector<BrickStatus> BrickRegistry::List() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<BrickStatus> out;
  for (const auto& [name, e] : entries_) out.push_back(StatusOf(name, *e));
  return out;
}

absl::StatusOr<std::vector<std::shared_ptr<const Brick>>> BrickRegistry::Acquire(std::span<const std::string> names) {
  std::vector<std::shared_ptr<const Brick>> out(names.size());
  std::unique_lock<std::mutex> lock(mu_);
  for (size_t i = 0; i < names.size(); ++i) {
    auto it = entries_.find(names[i]);
    if (it == entries_.end()) return absl::NotFoundError(absl::StrCat("brick \"", names[i], "\" is not loaded"));
    if (it->second->brick == nullptr) {
      // Evicted: reload from its path without the lock, then put it back unless someone else did
      // (or the brick was unloaded or replaced meanwhile).
      const std::string path = it->second->path, sha = it->second->sha256;
      lock.unlock();
      absl::StatusOr<std::shared_ptr<Brick>> reloaded = LoadChecked(path, sha);
      lock.lock();
      if (!reloaded.ok()) {
        ++counters_.load_failures;
        ++counters_.load_failures_by_brick[names[i]];
        return absl::Status(reloaded.status().code(), absl::StrCat("reloading evicted brick \"", names[i],
                                                                   "\": ", reloaded.status().message()));
      }
      it = entries_.find(names[i]);
      if (it == entries_.end()) return absl::NotFoundError(absl::StrCat("brick \"", names[i], "\" is not loaded"));
      if (it->second->brick == nullptr && it->second->sha256 == (*reloaded)->sha256()) {
        // Room for it, evicting others but not the bricks this request already holds.
        BS_RETURN_IF_ERROR(MakeRoom((*reloaded)->size_bytes(), it->second.get()));
        it->second->brick = *reloaded;
        live_.push_back(*reloaded);
        ++counters_.reloads;
      }
      if (it->second->brick == nullptr) {
        return absl::UnavailableError(absl::StrCat("brick \"", names[i], "\" changed while it was reloaded; retry"));
      }
    }
    out[i] = it->second->brick;
  }
  for (const std::string& name : names) {
    Entry& e = *entries_.at(name);
    ++e.requests_served;
    e.last_used = ++use_clock_;
  }
  return out;
}

BrickRegistryStats BrickRegistry::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  BrickRegistryStats s = counters_;
  s.resident_bytes = ResidentBytes();
  s.load_seconds = load_seconds_.Get();
  for (const auto& [name, e] : entries_) ++(e->brick != nullptr ? s.bricks_ready : s.bricks_evicted);
  return s;
}

}  // namespace brickserve
