#include "server/cli/bricks_command.h"

#include <chrono>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "brickserve/v1/bricks.grpc.pb.h"
#include "engine/cli/flags.h"
#include "grpcpp/grpcpp.h"
#include "server/bricks_service.h"
#include "server/config.h"
#include "server/status_mapping.h"

namespace brickserve {
namespace {

constexpr char kCommand[] = "brickserve bricks";

std::string StateName(v1::BrickInfo::State s) {
  return s == v1::BrickInfo::STATE_READY ? "ready" : s == v1::BrickInfo::STATE_EVICTED ? "evicted" : "?";
}

std::string Time(double unix_s) {
  const std::time_t t = static_cast<std::time_t>(unix_s);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

void PrintBrick(const v1::BrickInfo& b) {
  std::cout << absl::StrFormat(
      "name: %s\nkind: %s\nversion: %s\nstate: %s\nsize: %.1f MiB\nloaded: %s\nrequests served: %d\nidle: %s\n"
      "path: %s\nsha256: %s\nbase model: %s\nplugs into: %s\n",
      b.name(), v1::BrickInfo::Kind_Name(b.kind()), b.version(), StateName(b.state()), b.size_bytes() / 1048576.0,
      Time(b.load_time_unix_s()), b.requests_served(), b.idle() ? "yes" : "no", b.path(), b.sha256(), b.base_model(),
      absl::StrJoin(b.plugs_into(), ", "));
}

int Fail(const grpc::Status& status) {
  std::cerr << kCommand << ": " << GrpcCodeName(status.error_code()) << ": " << status.error_message() << "\n";
  return 1;
}

}  // namespace

int BricksCommand(int argc, char** argv, int first) {
  std::string server = kDefaultListenAddress, name, path, sha256, token_file;
  float timeout_s = 120;
  FlagSet flags(kCommand,
                "Administer the bricks of a running server (brickserve.v1.Bricks):\n"
                "  brickserve bricks list\n"
                "  brickserve bricks get --name N\n"
                "  brickserve bricks load --name N --path /abs/dir [--sha256 HEX]   (a name that exists is updated)\n"
                "  brickserve bricks unload --name N");
  flags.String("server", &server, "server address host:port");
  flags.String("name", &name, "brick name");
  flags.String("path", &path, "brick directory on the server (absolute)");
  flags.String("sha256", &sha256, "expected SHA-256 of the brick's weights file");
  flags.String("token-file", &token_file, "file with the admin token, when the server requires one");
  flags.Float("timeout", &timeout_s, "deadline in seconds (0 = none)");
  const std::string action = first < argc ? argv[first] : "";
  if (action == "--help" || action == "-h" || action.empty()) {
    std::cout << flags.Usage();
    return action.empty() ? 2 : 0;
  }
  if (absl::Status s = flags.Parse(argc, argv, first + 1); !s.ok()) {
    std::cerr << kCommand << ": " << s.message() << "\n";
    return 2;
  }
  if (flags.help_requested()) {
    std::cout << flags.Usage();
    return 0;
  }
  auto stub = v1::Bricks::NewStub(grpc::CreateChannel(server, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  if (timeout_s > 0) {
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::microseconds(static_cast<int64_t>(timeout_s * 1e6)));
  }
  if (!token_file.empty()) {
    auto token = ReadAdminToken(token_file);
    if (!token.ok()) {
      std::cerr << kCommand << ": " << token.status().message() << "\n";
      return 2;
    }
    context.AddMetadata("authorization", "Bearer " + *token);
  }
  if ((action == "get" || action == "load" || action == "unload") && name.empty()) {
    std::cerr << kCommand << " " << action << ": --name is required\n";
    return 2;
  }
  if (action == "list") {
    v1::ListBricksResponse resp;
    if (grpc::Status s = stub->ListBricks(&context, {}, &resp); !s.ok()) return Fail(s);
    std::cout << absl::StrFormat("%-24s %-6s %-12s %-8s %10s %9s  %s\n", "NAME", "KIND", "VERSION", "STATE", "SIZE MiB",
                                 "REQUESTS", "LOADED");
    for (const auto& b : resp.bricks()) {
      std::cout << absl::StrFormat("%-24s %-6s %-12s %-8s %10.1f %9d  %s\n", b.name(),
                                   b.kind() == v1::BrickInfo::KIND_LORA ? "lora" : "?", b.version(),
                                   StateName(b.state()), b.size_bytes() / 1048576.0, b.requests_served(),
                                   Time(b.load_time_unix_s()));
    }
    std::cout << absl::StrFormat("resident %.1f MiB of %s\n", resp.resident_bytes() / 1048576.0,
                                 resp.memory_budget_bytes() > 0
                                     ? absl::StrFormat("a %.1f MiB budget", resp.memory_budget_bytes() / 1048576.0)
                                     : std::string("no budget"));
    return 0;
  }
  if (action == "get") {
    v1::GetBrickRequest r;
    r.set_name(name);
    v1::BrickInfo info;
    if (grpc::Status s = stub->GetBrick(&context, r, &info); !s.ok()) return Fail(s);
    PrintBrick(info);
    return 0;
  }
  if (action == "load") {
    v1::LoadBrickRequest r;
    r.set_name(name);
    r.set_path(path);
    r.set_sha256(sha256);
    v1::BrickInfo info;
    if (grpc::Status s = stub->LoadBrick(&context, r, &info); !s.ok()) return Fail(s);
    PrintBrick(info);
    return 0;
  }
  if (action == "unload") {
    v1::UnloadBrickRequest r;
    r.set_name(name);
    v1::UnloadBrickResponse resp;
    if (grpc::Status s = stub->UnloadBrick(&context, r, &resp); !s.ok()) return Fail(s);
    std::cout << "unloaded " << name << "\n";
    return 0;
  }
  std::cerr << kCommand << ": unknown action \"" << action << "\" (list, get, load, unload)\n";
  return 2;
}

}  // namespace brickserve
