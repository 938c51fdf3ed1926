// `brickserve serve`: load the model and serve it over gRPC until SIGINT/SIGTERM.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "brickserve/v1/server_config.pb.h"

namespace brickserve {

// Reads `--config FILE` (if given) and lays the other flags of argv[first..) over it, then
// normalises the result. With --help, `*usage` receives the help text and nothing is validated.
absl::Status ParseServeFlags(int argc, char** argv, int first, v1::ServerConfig* config, std::string* usage);

// Returns the process exit code.
int ServeCommand(int argc, char** argv, int first);

}  // namespace brickserve
