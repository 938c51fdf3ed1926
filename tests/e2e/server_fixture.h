// A test suite fixture that runs one real `brickserve serve` (brick-tiny, port 0) for the whole
// suite and talks to it through a C++ gRPC client. Skips when ../shared/models/brick-tiny is absent.
#pragma once

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "brickserve/v1/inference.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "subprocess.h"

namespace brickserve::testing {

inline const std::string kModelDir = std::string(BRICKSERVE_SHARED_DIR) + "/models/brick-tiny";
inline bool HaveModel() { return std::filesystem::exists(kModelDir + "/reference/greedy.json"); }

// The server under test: BRICKSERVE_E2E_BINARY (e.g. an AddressSanitizer build) or this build's.
inline std::string ServerBinary() {
  const char* env = std::getenv("BRICKSERVE_E2E_BINARY");
  return env != nullptr && *env != '\0' ? env : BRICKSERVE_BINARY;
}

// Tests that need brick-tiny skip, saying where it was looked for, when it is absent.
class NeedsModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!HaveModel()) GTEST_SKIP() << "brick-tiny not found at " << kModelDir << " (../shared next to the checkout); skipping";
  }
};

// A client context with a deadline, so that no call of a test can hang.
inline std::unique_ptr<grpc::ClientContext> Context(std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + timeout);
  return context;
}

// Polls `done` until it holds or `timeout` passes; returns whether it held.
inline bool Eventually(const std::function<bool()>& done, std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

class ServerTest : public NeedsModelTest {
 protected:
  static void SetUpTestSuite() {
    if (!HaveModel()) return;
    auto server = ServerProcess::Start(BRICKSERVE_BINARY, {"--model", kModelDir, "--listen", "127.0.0.1:0"},
                                       std::chrono::seconds(120));
    if (!server.ok()) {
      start_error_ = new std::string(server.status().ToString());
      return;
    }
    server_ = server->release();
    channel_ = new std::shared_ptr<grpc::Channel>(
        grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
    stub_ = v1::InferenceService::NewStub(*channel_).release();
  }

  static void TearDownTestSuite() {
    delete stub_;
    delete channel_;
    stub_ = nullptr;
    channel_ = nullptr;
    if (server_ != nullptr) {
      // SIGTERM must shut the server down cleanly (exit code 0), not by being killed.
      EXPECT_EQ(server_->Stop(std::chrono::seconds(20)), 0);
      delete server_;
      server_ = nullptr;
    }
    delete start_error_;
    start_error_ = nullptr;
  }

  void SetUp() override {
    NeedsModelTest::SetUp();
    if (IsSkipped()) return;
    ASSERT_EQ(start_error_, nullptr) << *start_error_;
  }

  static v1::GetServerStatsResponse Stats() {
    v1::GetServerStatsResponse stats;
    auto context = Context();
    grpc::Status status = stub_->GetServerStats(context.get(), v1::GetServerStatsRequest(), &stats);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return stats;
  }

  // Waits until the server has freed one more request than in `before` and counted it in
  // `counter` (e.g. &v1::GetServerStatsResponse::cancelled_requests); returns the stats then.
  static v1::GetServerStatsResponse StatsOnceFreed(const v1::GetServerStatsResponse& before,
                                                   int64_t (v1::GetServerStatsResponse::*counter)() const) {
    v1::GetServerStatsResponse after;
    EXPECT_TRUE(Eventually([&] {
      after = Stats();
      return after.active_requests() == before.active_requests() && (after.*counter)() == (before.*counter)() + 1;
    })) << after.ShortDebugString();
    return after;
  }

  static ServerProcess* server_;
  static std::shared_ptr<grpc::Channel>* channel_;
  static v1::InferenceService::Stub* stub_;
  static std::string* start_error_;
};

inline ServerProcess* ServerTest::server_ = nullptr;
inline std::shared_ptr<grpc::Channel>* ServerTest::channel_ = nullptr;
inline v1::InferenceService::Stub* ServerTest::stub_ = nullptr;
inline std::string* ServerTest::start_error_ = nullptr;

}  // namespace brickserve::testing
