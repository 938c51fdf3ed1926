#include "server/bricks_service.h"

#include <openssl/crypto.h>

#include <algorithm>
#include <chrono>
#include <filesystem>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/util/read_file.h"
#include "server/config.h"
#include "server/status_mapping.h"

namespace brickserve {
namespace {

grpc::ServerUnaryReactor* Finish(grpc::CallbackServerContext* context, const grpc::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(status);
  return reactor;
}

v1::BrickInfo::Kind ToProto(BrickKind kind) {
  switch (kind) {
    case BrickKind::kLora: return v1::BrickInfo::KIND_LORA;
  }
  return v1::BrickInfo::KIND_UNSPECIFIED;
}

}  // namespace

BrickLoadWorkers::BrickLoadWorkers(int threads) {
  for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { Run(); });
}

BrickLoadWorkers::~BrickLoadWorkers() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (std::thread& t : threads_) t.join();
}

void BrickLoadWorkers::Submit(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(task));
  }
  cv_.notify_one();
}

void BrickLoadWorkers::Run() {
  for (;;) {
    std::function<void()> task;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, nothing left
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    task();
  }
}

void FillBrickInfo(const BrickStatus& s, v1::BrickInfo* out) {
  out->set_name(s.name);
  out->set_kind(ToProto(s.kind));
  out->set_version(s.version);
  out->set_size_bytes(s.size_bytes);
  out->set_state(s.state == BrickState::kReady ? v1::BrickInfo::STATE_READY : v1::BrickInfo::STATE_EVICTED);
  out->set_load_time_unix_s(std::chrono::duration<double>(s.load_time.time_since_epoch()).count());
  out->set_requests_served(s.requests_served);
  out->set_path(s.path);
  out->set_sha256(s.sha256);
  out->set_base_model(s.base_model);
  for (const std::string& p : s.plugs_into) out->add_plugs_into(p);
  out->set_idle(s.idle);
}

absl::StatusOr<std::string> ReadAdminToken(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) return absl::InvalidArgumentError(absl::StrCat("admin_token_file ", path, " cannot be read"));
  std::string token(absl::StripAsciiWhitespace(*text));
  if (token.empty()) return absl::InvalidArgumentError(absl::StrCat("admin_token_file ", path, " is empty"));
  return token;
}

grpc::Status BricksService::Authorize(const grpc::CallbackServerContext& context) const {
  if (admin_token_.empty()) return grpc::Status::OK;
  const auto& md = context.client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "the Bricks service needs metadata \"authorization: Bearer <admin token>\"");
  }
  const std::string given(it->second.data(), it->second.size());
  const std::string want = "Bearer " + admin_token_;
  // Constant time, so the token cannot be guessed byte by byte from response times.
  if (given.size() != want.size() || CRYPTO_memcmp(given.data(), want.data(), want.size()) != 0) {
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "the admin token is not valid");
  }
  return grpc::Status::OK;
}

absl::Status BricksService::CheckRoots(const std::string& path) const {
  if (roots_.empty()) return absl::OkStatus();
  namespace fs = std::filesystem;
  std::error_code ec;
  // Resolves symlinks and "..", so neither can lead outside a root.
  const fs::path resolved = fs::weakly_canonical(path, ec);
  if (!ec) {
    for (const std::string& root : roots_) {
      fs::path r = fs::weakly_canonical(root, ec);
      if (ec) continue;
      if (r.filename().empty()) r = r.parent_path();  // "/bricks/" as "/bricks"
      auto [root_end, _] = std::mismatch(r.begin(), r.end(), resolved.begin(), resolved.end());
      if (root_end == r.end()) return absl::OkStatus();
    }
  }
  return absl::PermissionDeniedError(absl::StrCat("path = \"", path, "\" is outside brick_roots (",
                                                  absl::StrJoin(roots_, ", "), ")"));
}

grpc::ServerUnaryReactor* BricksService::LoadBrick(grpc::CallbackServerContext* context,
                                                   const v1::LoadBrickRequest* request, v1::BrickInfo* response) {
  if (grpc::Status auth = Authorize(*context); !auth.ok()) return Finish(context, auth);
  if (absl::Status s = CheckBrickName(request->name(), "name"); !s.ok()) return Finish(context, ToGrpcStatus(s));
  if (request->path().empty() || request->path().front() != '/') {
    return Finish(context, ToGrpcStatus(absl::InvalidArgumentError(absl::StrCat(
                               "path = \"", request->path(), "\" must be an absolute path on the server"))));
  }
  if (absl::Status s = CheckRoots(request->path()); !s.ok()) return Finish(context, ToGrpcStatus(s));
  // The request and response live until the reactor finishes, whichever thread finishes it.
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  load_workers_.Submit([this, context, reactor, request, response] {
    if (context->IsCancelled()) {  // the caller gave up while the load was queued
      reactor->Finish(grpc::Status(grpc::StatusCode::CANCELLED, "LoadBrick cancelled before the load started"));
      return;
    }
    auto loaded = registry_->Load(request->name(), request->path(), request->sha256());
    if (!loaded.ok()) {
      reactor->Finish(ToGrpcStatus(loaded.status()));
      return;
    }
    FillBrickInfo(*loaded, response);
    reactor->Finish(grpc::Status::OK);
  });
  return reactor;
}

grpc::ServerUnaryReactor* BricksService::UnloadBrick(grpc::CallbackServerContext* context,
                                                     const v1::UnloadBrickRequest* request,
                                                     v1::UnloadBrickResponse* /*response*/) {
  if (grpc::Status auth = Authorize(*context); !auth.ok()) return Finish(context, auth);
  return Finish(context, ToGrpcStatus(registry_->Unload(request->name())));
}

grpc::ServerUnaryReactor* BricksService::ListBricks(grpc::CallbackServerContext* context,
                                                    const v1::ListBricksRequest* /*request*/,
                                                    v1::ListBricksResponse* response) {
  if (grpc::Status auth = Authorize(*context); !auth.ok()) return Finish(context, auth);
  for (const BrickStatus& s : registry_->List()) FillBrickInfo(s, response->add_bricks());
  response->set_memory_budget_bytes(registry_->memory_budget_bytes());
  response->set_resident_bytes(registry_->stats().resident_bytes);
  return Finish(context, grpc::Status::OK);
}

grpc::ServerUnaryReactor* BricksService::GetBrick(grpc::CallbackServerContext* context,
                                                  const v1::GetBrickRequest* request, v1::BrickInfo* response) {
  if (grpc::Status auth = Authorize(*context); !auth.ok()) return Finish(context, auth);
  auto status = registry_->Get(request->name());
  if (!status.ok()) return Finish(context, ToGrpcStatus(status.status()));
  FillBrickInfo(*status, response);
  return Finish(context, grpc::Status::OK);
}

}  // namespace brickserve
