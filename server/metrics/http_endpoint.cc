#include "server/metrics/http_endpoint.h"

#include <cstring>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "civetweb.h"
#include "server/metrics/text_serializer.h"

namespace brickserve {
namespace {

// civetweb reports a failed start through its log callback: keep the last message of this thread.
thread_local std::string g_last_log;

int LogMessage(const mg_connection*, const char* message) {
  g_last_log = message != nullptr ? message : "";
  return 1;  // handled: civetweb prints nothing itself
}

void Reply(mg_connection* conn, int code, const char* content_type, const std::string& body) {
  if (code == 200) {
    mg_send_http_ok(conn, content_type, static_cast<long long>(body.size()));
  } else {
    mg_printf(conn,
              "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nCache-Control: no-store\r\n"
              "Connection: close\r\n\r\n",
              code, mg_get_response_code_text(conn, code), content_type, body.size());
  }
  mg_write(conn, body.data(), body.size());
}

bool IsGet(mg_connection* conn) {
  const mg_request_info* info = mg_get_request_info(conn);
  return info != nullptr && info->request_method != nullptr &&
         (std::strcmp(info->request_method, "GET") == 0 || std::strcmp(info->request_method, "HEAD") == 0);
}

}  // namespace

absl::StatusOr<std::unique_ptr<HttpEndpoint>> HttpEndpoint::Start(const std::string& listen, Handlers handlers) {
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos || colon + 1 == listen.size()) {
    return absl::InvalidArgumentError(absl::StrCat("metrics_listen = \"", listen, "\" must be host:port"));
  }
  static std::once_flag init;
  std::call_once(init, [] { mg_init_library(0); });

  auto endpoint = std::unique_ptr<HttpEndpoint>(new HttpEndpoint());
  endpoint->handlers_ = std::move(handlers);
  mg_callbacks callbacks = {};
  callbacks.log_message = LogMessage;
  const char* options[] = {"listening_ports", listen.c_str(), "num_threads", "2", "request_timeout_ms", "10000",
                           nullptr};
  g_last_log.clear();
  endpoint->ctx_ = mg_start(&callbacks, endpoint.get(), options);
  if (endpoint->ctx_ == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat("cannot serve metrics on ", listen, " (metrics_listen): ",
                                                      g_last_log.empty() ? "address in use?" : g_last_log));
  }
  mg_server_port port = {};
  if (mg_get_server_ports(endpoint->ctx_, 1, &port) != 1 || port.port == 0) {
    return absl::InternalError(absl::StrCat("metrics endpoint on ", listen, " reports no bound port"));
  }
  endpoint->address_ = absl::StrCat(listen.substr(0, colon), ":", port.port);

  auto route = [](mg_connection* conn, void* data) -> int {
    auto* self = static_cast<HttpEndpoint*>(data);
    const std::string uri = mg_get_request_info(conn)->local_uri;
    if (!IsGet(conn)) {
      Reply(conn, 405, "text/plain", "only GET\n");
    } else if (uri == "/metrics") {
      Reply(conn, 200, metrics::kTextContentType, self->handlers_.metrics());
    } else if (uri == "/healthz") {
      Reply(conn, 200, "text/plain", "ok\n");
    } else if (uri == "/readyz") {
      const bool ready = self->handlers_.ready();
      Reply(conn, ready ? 200 : 503, "text/plain", ready ? "ready\n" : "not ready (starting or draining)\n");
    } else {
      Reply(conn, 404, "text/plain", "not found: try /metrics, /healthz or /readyz\n");
    }
    return 1;  // the request was answered
  };
  mg_set_request_handler(endpoint->ctx_, "/", route, endpoint.get());
  return endpoint;
}

HttpEndpoint::~HttpEndpoint() {
  if (ctx_ != nullptr) mg_stop(ctx_);
}

}  // namespace brickserve
