// The metrics side port of the real server (--metrics-listen): /healthz, /readyz and /metrics over
// HTTP; counters that move with real gRPC calls; output that `promtool check metrics` accepts;
// /readyz turning 503 while draining; a busy metrics port as a clear start-up error.
#include <signal.h>

#include <cstdlib>
#include <fstream>
#include <thread>

#include "civetweb.h"
#include "gmock/gmock.h"
#include "server_fixture.h"

namespace brickserve::testing {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

struct HttpResponse {
  int status = 0;
  std::string body;
};

// GET over plain HTTP with civetweb's client.
HttpResponse Get(const std::string& address, const std::string& path) {
  static const bool init = (mg_init_library(0), true);
  (void)init;
  const size_t colon = address.rfind(':');
  const std::string host = address.substr(0, colon);
  const int port = std::atoi(address.c_str() + colon + 1);
  char error[256] = "";
  mg_connection* conn = mg_download(host.c_str(), port, 0, error, sizeof error,
                                    "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path.c_str(), address.c_str());
  HttpResponse r;
  if (conn == nullptr) {
    ADD_FAILURE() << "GET " << address << path << ": " << error;
    return r;
  }
  r.status = mg_get_response_info(conn)->status_code;
  char buf[4096];
  for (int n; (n = mg_read(conn, buf, sizeof buf)) > 0;) r.body.append(buf, static_cast<size_t>(n));
  mg_close_connection(conn);
  return r;
}

// The value of one series ("name{labels}" exactly as exposed), or -1 when absent.
double Sample(const std::string& body, const std::string& series) {
  const std::string key = "\n" + series + " ";
  const size_t at = ("\n" + body).find(key);
  if (at == std::string::npos) return -1;
  return std::strtod(body.c_str() + at + key.size() - 1, nullptr);
}

class MetricsE2E : public NeedsModelTest {
 protected:
  void SetUp() override {
    NeedsModelTest::SetUp();
    if (IsSkipped()) return;
    auto server = ServerProcess::Start(BRICKSERVE_BINARY, {"--model", kModelDir, "--listen", "127.0.0.1:0",
                                                           "--metrics-listen", "127.0.0.1:0"}, 120s);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    ASSERT_FALSE(server_->metrics_address().empty()) << "no \"brickserve: metrics on\" line";
    stub_ = v1::InferenceService::NewStub(grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
  }
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<v1::InferenceService::Stub> stub_;
};

TEST_F(MetricsE2E, ProbesAnswer) {
  const std::string m = server_->metrics_address();
  EXPECT_EQ(Get(m, "/healthz").status, 200);
  EXPECT_EQ(Get(m, "/readyz").status, 200);
  const HttpResponse missing = Get(m, "/nope");
  EXPECT_EQ(missing.status, 404);
  EXPECT_THAT(missing.body, HasSubstr("/metrics"));
}

TEST_F(MetricsE2E, CountersMoveWithCallsAndPromtoolAcceptsTheOutput) {
  const std::string m = server_->metrics_address();
  const std::string ok = "brickserve_grpc_requests_total{code=\"OK\",method=\"/brickserve.v1.InferenceService/Generate\"}";
  const std::string bad =
      "brickserve_grpc_requests_total{code=\"INVALID_ARGUMENT\",method=\"/brickserve.v1.InferenceService/Generate\"}";
  const HttpResponse before = Get(m, "/metrics");
  ASSERT_EQ(before.status, 200);
  EXPECT_EQ(Sample(before.body, ok), -1);

  v1::GenerateRequest r;
  r.set_text("The kernel uses a");
  r.set_max_new_tokens(8);
  r.set_ignore_eos(true);
  v1::GenerateResponse resp;
  for (int i = 0; i < 2; ++i) {
    auto context = Context();
    ASSERT_TRUE(stub_->Generate(context.get(), r, &resp).ok());
  }
  r.set_max_new_tokens(1 << 20);
  auto context = Context();
  EXPECT_EQ(stub_->Generate(context.get(), r, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  // The interceptor counts a call as its status is sent, which may be just after the client saw it.
  HttpResponse after;
  ASSERT_TRUE(Eventually([&] {
    after = Get(m, "/metrics");
    return Sample(after.body, ok) == 2 && Sample(after.body, bad) == 1;
  })) << after.body;
  EXPECT_EQ(Sample(after.body, "brickserve_generation_tokens_total") -
                std::max(0.0, Sample(before.body, "brickserve_generation_tokens_total")), 16);
  EXPECT_EQ(Sample(after.body, "brickserve_time_to_first_token_seconds_count"), 2);
  EXPECT_EQ(Sample(after.body, "brickserve_time_to_first_token_seconds_bucket{le=\"+Inf\"}"), 2);
  EXPECT_EQ(Sample(after.body, "brickserve_grpc_request_duration_seconds_count{method=\"/brickserve.v1.InferenceService/"
                               "Generate\"}"), 3);
  EXPECT_GT(Sample(after.body, "brickserve_kv_cache_blocks_capacity"), 0);
  EXPECT_GT(Sample(after.body, "brickserve_engine_steps_total"), 0);
  EXPECT_EQ(Sample(after.body, "brickserve_engine_step_seconds_count"),
            Sample(after.body, "brickserve_engine_steps_total"));
  EXPECT_THAT(after.body, HasSubstr("brickserve_build_info{architecture=\"LlamaForCausalLM\""));

  if (std::system("command -v promtool > /dev/null 2>&1") != 0) {
    GTEST_SKIP() << "promtool not installed (Debian package prometheus): format check skipped";
  }
  const std::string path = ::testing::TempDir() + "/brickserve_metrics.txt";
  std::ofstream(path) << after.body;
  auto check = RunCommand({"/bin/sh", "-c", "promtool check metrics < " + path}, 60s);
  ASSERT_TRUE(check.ok()) << check.status();
  EXPECT_EQ(check->exit_code, 0) << check->out << check->err;
  std::remove(path.c_str());
}

// While a long generation drains, /readyz says 503 and /healthz still 200.
TEST_F(MetricsE2E, ReadyzTurnsUnavailableWhileDraining) {
  const std::string m = server_->metrics_address();
  v1::GenerateRequest r;
  r.set_text("Once upon a time");
  r.set_max_new_tokens(480);
  r.set_ignore_eos(true);
  auto context = Context();
  auto reader = stub_->GenerateStream(context.get(), r);
  v1::GenerateStreamResponse msg;
  ASSERT_TRUE(reader->Read(&msg));
  ASSERT_EQ(kill(server_->pid(), SIGTERM), 0);
  int ready = 0, healthy = 0;
  for (int i = 0; i < 200 && ready != 503; ++i) {
    ready = Get(m, "/readyz").status;
    healthy = Get(m, "/healthz").status;
    if (ready != 503) std::this_thread::sleep_for(2ms);
  }
  EXPECT_EQ(ready, 503);
  EXPECT_EQ(healthy, 200);
  while (reader->Read(&msg)) {
  }
  // Completed, or cut by the 5 s grace period on a very busy machine: either way it ended.
  const grpc::StatusCode code = reader->Finish().error_code();
  EXPECT_TRUE(code == grpc::StatusCode::OK || code == grpc::StatusCode::UNAVAILABLE) << code;
  EXPECT_EQ(server_->Stop(20s), 0);
}

TEST_F(MetricsE2E, BusyMetricsPortIsAStartupError) {
  auto second = RunCommand({BRICKSERVE_BINARY, "serve", "--model", kModelDir, "--listen", "127.0.0.1:0",
                            "--metrics-listen", server_->metrics_address()}, 120s);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->exit_code, 1);
  EXPECT_THAT(second->err, HasSubstr("cannot serve metrics on " + server_->metrics_address()));
  EXPECT_THAT(second->err, HasSubstr("metrics_listen"));
}

}  // namespace
}  // namespace brickserve::testing
