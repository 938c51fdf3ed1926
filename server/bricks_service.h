// brickserve.v1.Bricks: load, replace, unload and inspect bricks while traffic flows (the registry
// does the work; this maps it to the API). Calls may be guarded by an admin token.
#pragma once

#include <string>
#include <vector>

#include "brickserve/v1/bricks.grpc.pb.h"
#include "bricks/registry.h"

namespace brickserve {

class BricksService final : public v1::Bricks::CallbackService {
 public:
  // `admin_token` empty: every caller may administer bricks. `roots` non-empty: LoadBrick reads
  // only inside those directories.
  BricksService(BrickRegistry* registry, std::string admin_token, std::vector<std::string> roots = {})
      : registry_(registry), admin_token_(std::move(admin_token)), roots_(std::move(roots)) {}

  // Loading reads and hashes the brick on the calling gRPC thread: admin calls are rare, and
  // generation runs on the engine's own thread meanwhile.
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
};

// Fills the API's view of a brick.
void FillBrickInfo(const BrickStatus& status, v1::BrickInfo* out);

// Reads an admin token file (surrounding whitespace dropped); INVALID_ARGUMENT when empty.
absl::StatusOr<std::string> ReadAdminToken(const std::string& path);

}  // namespace brickserve
