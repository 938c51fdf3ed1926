// The plain-HTTP side port (civetweb): /metrics for Prometheus, /healthz (the process answers) and
// /readyz (it accepts generations: model loaded, not draining) for probes that do not speak gRPC.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

struct mg_context;

namespace brickserve {

class HttpEndpoint {
 public:
  struct Handlers {
    std::function<std::string()> metrics;  // the exposition-format body
    std::function<bool()> ready;
  };

  // Listens on `listen` ("host:port"; port 0 picks one). FAILED_PRECONDITION naming the address
  // when it cannot bind.
  static absl::StatusOr<std::unique_ptr<HttpEndpoint>> Start(const std::string& listen, Handlers handlers);
  ~HttpEndpoint();  // stops serving; in-flight requests finish first
  HttpEndpoint(const HttpEndpoint&) = delete;
  HttpEndpoint& operator=(const HttpEndpoint&) = delete;

  // host:port actually bound.
  const std::string& address() const { return address_; }

 private:
  HttpEndpoint() = default;
  Handlers handlers_;
  mg_context* ctx_ = nullptr;
  std::string address_;
};

}  // namespace brickserve
