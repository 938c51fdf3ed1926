#include "server/server.h"

#include <iostream>

#include "absl/strings/str_cat.h"
#include "bricks/brick_loader.h"
#include "engine/model/calibration_text.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"

namespace brickserve {

absl::StatusOr<std::unique_ptr<Server>> Server::Start(Engine* engine, const v1::ServerConfig& config) {
  auto limits = ResolveLimits(config.limits(), engine->max_context());
  if (!limits.ok()) return limits.status();
  if (!config.default_router().empty()) {
    auto router = ParseRouterPolicy(config.default_router());
    if (!router.ok()) return router.status();
    if (absl::Status s = ValidateRouterPolicy(*router, engine->modules()); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("default_router: ", s.message()));
    }
    limits->default_router = *router;
  }
  auto server = std::unique_ptr<Server>(new Server());
  server->limits_ = *limits;
  server->engine_ = engine;
  std::string admin_token;
  if (!config.admin_token_file().empty()) {
    auto token = ReadAdminToken(config.admin_token_file());
    if (!token.ok()) return token.status();
    admin_token = *std::move(token);
  }
  if (absl::Status s = server->StartCoreGuard(config); !s.ok()) return s;
  const BaseModel base{engine->config(), engine->info().model_dir, engine->device(), server->core_guard_.get()};
  server->bricks_ = std::make_unique<BrickRegistry>(
      [base](const std::string& path) { return LoadBrickFromPath(path, base); },
      BrickRegistryOptions{static_cast<size_t>(config.brick_memory_budget_mb()) << 20});
  ServiceDeps deps{engine, *limits, &server->stats_, server->bricks_.get()};
  server->service_ = std::make_unique<InferenceService>(deps);
  server->bricks_service_ = std::make_unique<BricksService>(
      server->bricks_.get(), std::move(admin_token),
      std::vector<std::string>(config.brick_roots().begin(), config.brick_roots().end()));
  server->metrics_ = std::make_unique<ServerMetrics>(engine, server->bricks_.get(), BRICKSERVE_VERSION);
  if (!config.metrics_listen().empty()) {
    Server* self = server.get();
    auto http = HttpEndpoint::Start(config.metrics_listen(), {[self] { return self->metrics_->Scrape(); },
                                                               [self] { return self->ready(); }});
    if (!http.ok()) return http.status();
    server->http_ = *std::move(http);
  }

  // Start-up bricks before the gRPC port opens: nobody can send a request naming one too early.
  for (const v1::BrickSource& b : config.bricks()) {
    auto loaded = server->bricks_->Load(b.name(), b.path(), b.sha256());
    if (!loaded.ok()) {
      return absl::Status(loaded.status().code(),
                          absl::StrCat("start-up brick \"", b.name(), "\" (", b.path(), "): ", loaded.status().message()));
    }
    std::cerr << "brickserve: brick " << b.name() << " version " << loaded->version << " (" << loaded->size_bytes
              << " bytes)\n";
  }
  if (!config.brick_dir().empty()) {
    const int poll_s = config.brick_dir_poll_s() > 0 ? config.brick_dir_poll_s() : 10;
    server->brick_watcher_ = std::make_unique<BrickDirWatcher>(
        server->bricks_.get(), config.brick_dir(), std::chrono::seconds(poll_s),
        [](const std::string& line) { std::cerr << "brickserve: " << line << "\n"; });
    (void)server->brick_watcher_->ScanOnce();  // failures are logged; they do not stop the start-up
    server->brick_watcher_->Start();
  }

  // Both are process-wide switches that apply to servers built after them.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  // Without this, Linux gRPC sets SO_REUSEPORT and a second server on a busy port would silently
  // share it instead of failing.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.SetMaxReceiveMessageSize(limits->max_request_bytes);
  builder.AddListeningPort(config.listen(), grpc::InsecureServerCredentials(), &server->port_);
  builder.RegisterService(server->service_.get());
  builder.RegisterService(server->bricks_service_.get());
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(server->metrics_->InterceptorFactory());
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", config.listen(),
                                               " (address in use or not local?)"));
  }
  const std::string host = config.listen().substr(0, config.listen().rfind(':'));
  server->address_ = absl::StrCat(host, ":", server->port_);
  server->server_->GetHealthCheckService()->SetServingStatus(v1::InferenceService::service_full_name(), true);
  server->ready_ = true;
  return server;
}

absl::Status Server::StartCoreGuard(const v1::ServerConfig& config) {
  if (config.has_core_guard() && !config.core_guard()) return absl::OkStatus();
  CoreMapOptions map_options;
  if (config.core_map_ratio() > 0) map_options.ratio = config.core_map_ratio();
  absl::StatusOr<CoreMap> map;
  bool computed = true;
  absl::Status write_status;
  if (config.core_map().empty()) {
    // Nothing is written into the model directory (often read-only, or shared): computed each start.
    map = engine_->ComputeCoreMap(engine_->tokenizer().Encode(DefaultCalibrationText(), true), map_options);
  } else {
    map = engine_->LoadOrComputeCoreMap(config.core_map(), map_options, &computed, &write_status);
  }
  if (!map.ok()) return absl::Status(map.status().code(), absl::StrCat("core map: ", map.status().message()));
  if (!write_status.ok()) {
    std::cerr << "brickserve: core map computed but not cached (" << write_status.message() << ")\n";
  }
  std::cerr << "brickserve: core map " << (computed ? "computed" : "read from " + config.core_map()) << ": "
            << map->Summary() << "\n";
  CoreGuardOptions guard_options;
  if (config.core_guard_max_relative_delta() > 0) guard_options.max_relative_delta = config.core_guard_max_relative_delta();
  core_guard_ = std::make_unique<CoreGuard>(*std::move(map), guard_options);
  return absl::OkStatus();
}

Server::~Server() { Shutdown(std::chrono::milliseconds(0)); }

void Server::Shutdown(std::chrono::milliseconds grace) {
  if (shut_down_) return;
  shut_down_ = true;
  if (server_ != nullptr) {
    // NOT_SERVING first, so health-checking load balancers stop sending new calls.
    ready_ = false;
    server_->GetHealthCheckService()->SetServingStatus(false);
    engine_->StopAccepting();
    const auto deadline = std::chrono::steady_clock::now() + grace;
    if (!engine_->WaitUntilIdle(deadline)) {
      engine_->AbortAll(absl::UnavailableError(absl::StrCat(
          "the server shut down before this request finished (shutdown grace period ",
          std::chrono::duration<double>(grace).count(), " s); retry on another replica")));
    }
    // Let the calls write their last message and status before the connections close.
    stats_.WaitUntilIdle(std::max(deadline, std::chrono::steady_clock::now() + std::chrono::seconds(1)));
    server_->Shutdown(std::chrono::system_clock::now());
    server_->Wait();
  }
}

}  // namespace brickserve
