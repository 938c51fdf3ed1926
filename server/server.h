// The gRPC server around a loaded engine: the inference service, the standard health service
// (grpc.health.v1) and server reflection, on one listening address.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "brickserve/v1/server_config.pb.h"
#include "bricks/brick_dir_watcher.h"
#include "bricks/core_guard/core_guard.h"
#include "bricks/registry.h"
#include "engine/engine.h"
#include "grpcpp/server.h"
#include "server/bricks_service.h"
#include "server/config.h"
#include "server/inference_service.h"
#include "server/metrics/http_endpoint.h"
#include "server/metrics/server_metrics.h"
#include "server/request_stats.h"

namespace brickserve {

class Server {
 public:
  // Serves `engine` (which must outlive the server) as `config` says; `config` was normalised
  // (NormalizeServerConfig). Loads the start-up bricks before it reports ready (the metrics port,
  // when configured, answers /healthz meanwhile). Fails when the limits do not fit the model, a
  // start-up brick cannot be loaded, or an address is taken.
  static absl::StatusOr<std::unique_ptr<Server>> Start(Engine* engine, const v1::ServerConfig& config);
  ~Server();

  // The guard bricks are checked with; null when core_guard is off.
  const CoreGuard* core_guard() const { return core_guard_.get(); }

  // The address actually bound: the configured host with the chosen port (port 0 picks one).
  const std::string& address() const { return address_; }
  // The metrics/health HTTP address actually bound; empty when metrics_listen is not set.
  std::string metrics_address() const { return http_ ? http_->address() : ""; }
  // Accepting generations: started and not draining (what /readyz and grpc.health.v1 report).
  bool ready() const { return ready_.load(); }
  int port() const { return port_; }
  BrickRegistry* bricks() const { return bricks_.get(); }
  const Limits& limits() const { return limits_; }

  // Graceful stop: reports NOT_SERVING, refuses new generations (UNAVAILABLE), lets the accepted
  // ones finish for up to `grace`, then ends what is left with UNAVAILABLE and closes the
  // connections. Returns as soon as nothing is in flight: idle client connections do not hold it
  // up (gRPC's own graceful shutdown would wait for every client to acknowledge its GOAWAY).
  // Idempotent. The engine accepts no new requests afterwards.
  void Shutdown(std::chrono::milliseconds grace);

 private:
  Server() = default;
  absl::Status StartCoreGuard(const v1::ServerConfig& config);

  Limits limits_;
  std::string address_;
  int port_ = 0;
  Engine* engine_ = nullptr;
  RequestStats stats_;
  std::unique_ptr<CoreGuard> core_guard_;  // read by brick loads
  std::unique_ptr<BrickRegistry> bricks_;  // before what uses it: destroyed after them
  std::unique_ptr<ServerMetrics> metrics_;
  std::unique_ptr<InferenceService> service_;
  std::unique_ptr<BricksService> bricks_service_;
  std::unique_ptr<BrickDirWatcher> brick_watcher_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<HttpEndpoint> http_;  // last member: destroyed first, before what it reports on
  std::atomic<bool> ready_{false};
  bool shut_down_ = false;
};

}  // namespace brickserve
