// `brickserve serve` configuration: the text-format config file (proto/brickserve/v1/
// server_config.proto), its validation, and the limits resolved against the loaded model.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "brickserve/v1/server_config.pb.h"
#include "engine/engine.h"

namespace brickserve {

inline constexpr char kDefaultListenAddress[] = "127.0.0.1:50051";

// Request limits with every default filled in (see ServerLimits in server_config.proto).
struct Limits {
  int max_new_tokens = 0;
  int default_max_new_tokens = 0;
  int max_prompt_tokens = 0;
  int max_stop_strings = 0;
  int max_stop_string_bytes = 0;
  int max_queued_requests = 0;
  int max_request_bytes = 0;
  int max_top_logprobs = 20;  // the engine's own limit
  int max_bricks_per_request = 0;
  RouterPolicy default_router;  // for requests that leave router.policy unset (ServerConfig.default_router)
};

// Parses a text-format ServerConfig; errors name `source` and the line and column.
absl::StatusOr<v1::ServerConfig> ParseServerConfig(std::string_view text, std::string_view source);
absl::StatusOr<v1::ServerConfig> LoadServerConfigFile(const std::string& path);

// Checks what can be checked before the model is loaded (required fields, signs, address shape) and
// fills the model-independent defaults (listen address, device).
absl::Status NormalizeServerConfig(v1::ServerConfig* config);

// A brick name: 1 to 128 characters of [A-Za-z0-9._-]; INVALID_ARGUMENT naming `field` otherwise.
absl::Status CheckBrickName(const std::string& name, const std::string& field);

EngineOptions ToEngineOptions(const v1::ServerConfig& config);

// Fills the limits' defaults for a model with `max_context` tokens; INVALID_ARGUMENT naming the
// field when a configured limit does not fit the context.
absl::StatusOr<Limits> ResolveLimits(const v1::ServerLimits& configured, int max_context);

}  // namespace brickserve
