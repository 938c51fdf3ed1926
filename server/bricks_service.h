// brickserve.v1.Bricks: load, replace, unload and inspect bricks while traffic flows (the registry
// does the work; this maps it to the API). Calls may be guarded by an admin token.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "brickserve/v1/bricks.grpc.pb.h"
#include "bricks/registry.h"

namespace brickserve {

// Runs brick loads off gRPC's threads. A load reads and hashes files (seconds for a large adapter,
// forever on a hung mount), and gRPC runs every callback of the server on a few shared threads
// (two on a 2-core machine): two loads there stalled every other call, generation included.
class BrickLoadWorkers {
 public:
  explicit BrickLoadWorkers(int threads);
  ~BrickLoadWorkers();  // runs what is queued, then joins
  BrickLoadWorkers(const BrickLoadWorkers&) = delete;
  BrickLoadWorkers& operator=(const BrickLoadWorkers&) = delete;

  void Submit(std::function<void()> task);

 private:
  void Run();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

class BricksService final : public v1::Bricks::CallbackService {
 public:
  // `admin_token` empty: every caller may administer bricks. `roots` non-empty: LoadBrick reads
  // only inside those directories.
  BricksService(BrickRegistry* registry, std::string admin_token, std::vector<std::string> roots = {})
      : registry_(registry), admin_token_(std::move(admin_token)), roots_(std::move(roots)) {}

  // Checks the call on the gRPC thread, then loads on a BrickLoadWorkers thread (two; more loads
  // queue) and finishes the call from there.
  grpc::ServerUnaryReactor* LoadBrick(grpc::CallbackServerContext* context, const v1::LoadBrickRequest* request,
                                      v1::BrickInfo* response) override;
  grpc::ServerUnaryReactor* UnloadBrick(grpc::CallbackServerContext* context, const v1::UnloadBrickRequest* request,
                                        v1::UnloadBrickResponse* response) override;
  grpc::ServerUnaryReactor* ListBricks(grpc::CallbackServerContext* context, const v1::ListBricksRequest* request,
                                       v1::ListBricksResponse* response) override;
  grpc::ServerUnaryReactor* GetBrick(grpc::CallbackServerContext* context, const v1::GetBrickRequest* request,
                                     v1::BrickInfo* response) override;

 private:
  // OK, UNAUTHENTICATED (no token) or PERMISSION_DENIED (another token).
  grpc::Status Authorize(const grpc::CallbackServerContext& context) const;

  // OK when `path` (resolved) lies inside a root, or there are none; else PERMISSION_DENIED.
  absl::Status CheckRoots(const std::string& path) const;

  BrickRegistry* const registry_;
  const std::string admin_token_;
  const std::vector<std::string> roots_;
  BrickLoadWorkers load_workers_{2};
};

// Fills the API's view of a brick.
void FillBrickInfo(const BrickStatus& status, v1::BrickInfo* out);

// Reads an admin token file (surrounding whitespace dropped); INVALID_ARGUMENT when empty.
absl::StatusOr<std::string> ReadAdminToken(const std::string& path);

}  // namespace brickserve
