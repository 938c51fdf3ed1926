// The one place where engine/server `absl::Status` becomes a gRPC status (and back, for the client
// subcommands). Both code spaces are the canonical Google codes, but each is mapped by name so that a
// code added to either side is a compile-time decision, not a silent cast.
#pragma once

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace brickserve {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

// "INVALID_ARGUMENT" etc., for logs and the CLI.
const char* GrpcCodeName(grpc::StatusCode code);

}  // namespace brickserve
