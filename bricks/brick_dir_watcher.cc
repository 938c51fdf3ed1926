#include "bricks/brick_dir_watcher.h"

#include <filesystem>
#include <set>

#include "absl/strings/str_cat.h"

namespace brickserve {
namespace {

namespace fs = std::filesystem;

// Sizes and modification times of the files directly in `dir`, in name order.
std::string Signature(const fs::path& dir) {
  std::error_code ec;
  std::map<std::string, std::string> files;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (!entry.is_regular_file(ec)) continue;
    const auto size = entry.file_size(ec);
    const auto mtime = entry.last_write_time(ec).time_since_epoch().count();
    files[entry.path().filename().string()] = absl::StrCat(size, "@", mtime);
  }
  std::string sig;
  for (const auto& [name, s] : files) absl::StrAppend(&sig, name, "=", s, ";");
  return sig;
}

}  // namespace

BrickDirWatcher::BrickDirWatcher(BrickRegistry* registry, std::string dir, std::chrono::milliseconds period,
                                 std::function<void(const std::string&)> log)
    : registry_(registry), dir_(std::move(dir)), period_(period), log_(std::move(log)) {}

BrickDirWatcher::~BrickDirWatcher() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void BrickDirWatcher::Start() {
  thread_ = std::thread([this] {
    std::unique_lock<std::mutex> lock(mu_);
    while (!cv_.wait_for(lock, period_, [this] { return stop_; })) {
      lock.unlock();
      (void)ScanOnce();  // failures are logged; the next scan goes on
      lock.lock();
    }
  });
}

absl::Status BrickDirWatcher::ScanOnce() {
  std::lock_guard<std::mutex> scan_lock(scan_mu_);
  absl::Status first_error;
  std::error_code ec;
  std::set<std::string> present;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    const std::string name = entry.path().filename().string();
    // Hidden directories (Kubernetes volumes' "..data" and its timestamped twins) are not bricks.
    if (!entry.is_directory(ec) || name.front() == '.' || !IsValidBrickName(name)) continue;
    present.insert(name);
    const std::string sig = Signature(entry.path());
    auto it = seen_.find(name);
    if (it != seen_.end() && it->second.signature == sig) continue;
    // Skip a directory still being written (no files yet); it is picked up at a later scan.
    if (sig.empty()) continue;
    const bool update = it != seen_.end() && it->second.loaded;
    auto loaded = registry_->Load(name, entry.path().string());
    Seen& s = seen_[name];
    s.signature = sig;
    if (loaded.ok()) {
      s.loaded = true;
      log_(absl::StrCat("brick_dir: ", update ? "updated " : "loaded ", name, " version ", loaded->version));
    } else {
      log_(absl::StrCat("brick_dir: cannot load ", name, ": ", loaded.status().ToString()));
      if (first_error.ok()) first_error = loaded.status();
    }
  }
  if (ec) {
    log_(absl::StrCat("brick_dir: cannot list ", dir_, ": ", ec.message()));
    return absl::UnavailableError(absl::StrCat("brick_dir ", dir_, " cannot be listed: ", ec.message()));
  }
  for (auto it = seen_.begin(); it != seen_.end();) {
    if (present.count(it->first) > 0) {
      ++it;
      continue;
    }
    if (it->second.loaded && registry_->Unload(it->first).ok()) {
      log_(absl::StrCat("brick_dir: unloaded ", it->first, " (its directory is gone)"));
    }
    it = seen_.erase(it);
  }
  return first_error;
}

}  // namespace brickserve
