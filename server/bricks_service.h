// brickserve.v1.Bricks: load, replace, unload and inspect bricks while traffic flows (the registry
// does the work; this maps it to the API). Calls may be guarded by an admin token.
#pragma once

#include <string>

#include "brickserve/v1/bricks.grpc.pb.h"
#include "bricks/registry.h"

namespace brickserve {

class BricksService final : public v1::Bricks::CallbackService {
 public:
  // `admin_token` empty: every caller may administer bricks.
  BricksService(BrickRegistry* registry, std::string admin_token)
      : registry_(registry), admin_token_(std::move(admin_token)) {}

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

  BrickRegistry* const registry_;
  const std::string admin_token_;
};

// Fills the API's view of a brick.
void FillBrickInfo(const BrickStatus& status, v1::BrickInfo* out);

// Reads an admin token file (surrounding whitespace dropped); INVALID_ARGUMENT when empty.
absl::StatusOr<std::string> ReadAdminToken(const std::string& path);

}  // namespace brickserve
