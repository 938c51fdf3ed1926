#include "server/config.h"

#include <algorithm>
#include <fstream>
#include <initializer_list>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "bricks/brick.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"

namespace brickserve {
namespace {

// Keeps the first parse error with its position (TextFormat logs errors otherwise).
class FirstError : public google::protobuf::io::ErrorCollector {
 public:
  void AddError(int line, google::protobuf::io::ColumnNumber column, const std::string& message) override {
    if (error_.empty()) error_ = absl::StrCat(line + 1, ":", column + 1, ": ", message);
  }
  const std::string& error() const { return error_; }

 private:
  std::string error_;
};

using NamedValues = std::initializer_list<std::pair<const char*, int>>;

absl::Status NonNegative(const char* field, int value) {
  if (value >= 0) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(field, " = ", value, " must not be negative (0 = default)"));
}

}  // namespace

absl::StatusOr<v1::ServerConfig> ParseServerConfig(std::string_view text, std::string_view source) {
  v1::ServerConfig config;
  google::protobuf::TextFormat::Parser parser;
  FirstError errors;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(std::string(text), &config)) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(source), ":", errors.error()));
  }
  return config;
}

absl::StatusOr<v1::ServerConfig> LoadServerConfigFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read config file ", path));
  std::stringstream text;
  text << in.rdbuf();
  return ParseServerConfig(text.str(), path);
}

absl::Status NormalizeServerConfig(v1::ServerConfig* c) {
  if (c->model().empty()) return absl::InvalidArgumentError("model is required (the model directory)");
  if (c->listen().empty()) c->set_listen(kDefaultListenAddress);
  // host:port, or [v6]:port; gRPC would accept more (unix:...), which we do not promise.
  const size_t colon = c->listen().rfind(':');
  if (colon == std::string::npos || colon + 1 == c->listen().size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("listen = \"", c->listen(), "\" must be host:port (port 0 picks a free one)"));
  }
  if (const std::string& m = c->metrics_listen(); !m.empty()) {
    const size_t mc = m.rfind(':');
    if (mc == std::string::npos || mc + 1 == m.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("metrics_listen = \"", m, "\" must be host:port (port 0 picks a free one)"));
    }
  }
  if (c->device().empty()) c->set_device("cpu");
  for (auto [field, value] : NamedValues{{"threads", c->threads()}, {"max_context", c->max_context()},
                              {"max_batch_tokens", c->max_batch_tokens()}, {"kv_cache_tokens", c->kv_cache_tokens()},
                              {"shutdown_grace_s", c->shutdown_grace_s()},
                              {"max_running_requests", c->max_running_requests()},
                              {"prefill_chunk_tokens", c->prefill_chunk_tokens()},
                              {"max_step_ms", c->max_step_ms()}}) {
    if (auto s = NonNegative(field, value); !s.ok()) return s;
  }
  const auto& l = c->limits();
  for (auto [field, value] : NamedValues{{"limits.max_new_tokens", l.max_new_tokens()},
                              {"limits.default_max_new_tokens", l.default_max_new_tokens()},
                              {"limits.max_prompt_tokens", l.max_prompt_tokens()},
                              {"limits.max_stop_strings", l.max_stop_strings()},
                              {"limits.max_stop_string_bytes", l.max_stop_string_bytes()},
                              {"limits.max_queued_requests", l.max_queued_requests()},
                              {"limits.max_request_bytes", l.max_request_bytes()},
                              {"limits.max_bricks_per_request", l.max_bricks_per_request()},
                              {"brick_dir_poll_s", c->brick_dir_poll_s()}}) {
    if (auto s = NonNegative(field, value); !s.ok()) return s;
  }
  if (c->has_max_step_ratio() && !(c->max_step_ratio() >= 0 && c->max_step_ratio() <= 1000)) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_step_ratio = ", c->max_step_ratio(), " must be between 0 (no target) and 1000"));
  }
  if (c->core_guard_max_relative_delta() < 0 || c->core_map_ratio() < 0) {
    return absl::InvalidArgumentError(c->core_map_ratio() < 0 ? "core_map_ratio must not be negative"
                                                              : "core_guard_max_relative_delta must not be negative");
  }
  for (int i = 0; i < c->brick_roots_size(); ++i) {
    if (c->brick_roots(i).empty() || c->brick_roots(i).front() != '/') {
      return absl::InvalidArgumentError(
          absl::StrCat("brick_roots[", i, "] = \"", c->brick_roots(i), "\" must be an absolute path"));
    }
  }
  if (c->brick_memory_budget_mb() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("brick_memory_budget_mb = ", c->brick_memory_budget_mb(), " must not be negative"));
  }
  std::set<std::string> brick_names;
  for (int i = 0; i < c->bricks_size(); ++i) {
    const v1::BrickSource& b = c->bricks(i);
    if (auto s = CheckBrickName(b.name(), absl::StrCat("bricks[", i, "].name")); !s.ok()) return s;
    if (b.path().empty()) return absl::InvalidArgumentError(absl::StrCat("bricks[", i, "].path is required"));
    if (!brick_names.insert(b.name()).second) {
      return absl::InvalidArgumentError(absl::StrCat("bricks[", i, "].name = \"", b.name(), "\" is listed twice"));
    }
  }
  if (!c->default_router().empty()) {
    auto p = ParseRouterPolicy(c->default_router());
    if (!p.ok()) return absl::InvalidArgumentError(absl::StrCat("default_router: ", p.status().message()));
    if (p->sparse() && c->modules().empty()) {
      return absl::InvalidArgumentError(absl::StrCat("default_router = \"", c->default_router(),
                                                     "\" needs a module set: set modules"));
    }
  }
  if (l.max_queued_tokens() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("limits.max_queued_tokens = ", l.max_queued_tokens(), " must not be negative"));
  }
  return absl::OkStatus();
}

absl::Status CheckBrickName(const std::string& name, const std::string& field) {
  if (!IsValidBrickName(name)) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, " = \"", name, "\" must be 1 to 128 characters of [A-Za-z0-9._-]"));
  }
  return absl::OkStatus();
}

EngineOptions ToEngineOptions(const v1::ServerConfig& c) {
  EngineOptions o;
  o.model_dir = c.model();
  o.device.kind = c.device().empty() ? "cpu" : c.device();
  o.device.threads = c.threads();
  o.max_context = c.max_context();
  if (c.max_batch_tokens() > 0) o.max_batch_tokens = c.max_batch_tokens();
  o.kv_cache_tokens = c.kv_cache_tokens();
  if (c.max_running_requests() > 0) o.max_running = c.max_running_requests();
  o.prefill_chunk_tokens = c.prefill_chunk_tokens();
  o.max_step_ms = c.max_step_ms();
  if (c.has_max_step_ratio()) o.max_step_ratio = c.max_step_ratio();
  o.max_queued_requests = c.limits().max_queued_requests() > 0 ? c.limits().max_queued_requests() : 64;
  o.max_queued_tokens = c.limits().max_queued_tokens();
  o.prefix_cache = !c.has_prefix_cache() || c.prefix_cache();
  o.device.batch_invariant = !c.has_batch_invariant() || c.batch_invariant();
  o.modules_path = c.modules();
  return o;
}

absl::StatusOr<Limits> ResolveLimits(const v1::ServerLimits& in, int max_context) {
  Limits l;
  l.max_new_tokens = in.max_new_tokens() > 0 ? in.max_new_tokens() : max_context;
  if (l.max_new_tokens > max_context) {
    return absl::InvalidArgumentError(absl::StrCat("limits.max_new_tokens = ", l.max_new_tokens,
                                                   " exceeds the context length ", max_context));
  }
  l.default_max_new_tokens = in.default_max_new_tokens() > 0 ? in.default_max_new_tokens()
                                                             : std::min(128, l.max_new_tokens);
  if (l.default_max_new_tokens > l.max_new_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("limits.default_max_new_tokens = ", l.default_max_new_tokens,
                                                   " exceeds limits.max_new_tokens = ", l.max_new_tokens));
  }
  // One position must stay free for the first generated token.
  l.max_prompt_tokens = in.max_prompt_tokens() > 0 ? in.max_prompt_tokens() : max_context - 1;
  if (l.max_prompt_tokens > max_context - 1) {
    return absl::InvalidArgumentError(absl::StrCat("limits.max_prompt_tokens = ", l.max_prompt_tokens,
                                                   " must be below the context length ", max_context));
  }
  l.max_stop_strings = in.max_stop_strings() > 0 ? in.max_stop_strings() : 16;
  l.max_stop_string_bytes = in.max_stop_string_bytes() > 0 ? in.max_stop_string_bytes() : 256;
  l.max_queued_requests = in.max_queued_requests() > 0 ? in.max_queued_requests() : 64;
  l.max_request_bytes = in.max_request_bytes() > 0 ? in.max_request_bytes() : 4 << 20;
  l.max_bricks_per_request = in.max_bricks_per_request() > 0 ? in.max_bricks_per_request() : 8;
  return l;
}

}  // namespace brickserve
