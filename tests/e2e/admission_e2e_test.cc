// Load and shutdown through the real server, each test with its own `brickserve serve`: a flood
// beyond the queue bound is refused at once with RESOURCE_EXHAUSTED while the accepted calls
// complete; a small KV pool preempts and a shared prefix is reused, visible in Usage and
// GetServerStats, with outputs unchanged; and a SIGTERM whose grace period is too short ends the
// calls still in flight with UNAVAILABLE and a message saying why, after which the process exits 0.
#include <signal.h>

#include <atomic>
#include <latch>
#include <mutex>
#include <random>
#include <thread>

#include "gmock/gmock.h"
#include "server_fixture.h"

namespace brickserve::testing {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

struct StreamOutcome {
  grpc::Status status;
  int tokens = 0;
};

// Streams a long generation; `pieces_seen` counts the streams that received a piece.
StreamOutcome LongStream(v1::InferenceService::Stub* stub, int max_new_tokens, std::atomic<int>* pieces_seen) {
  v1::GenerateRequest r;
  r.set_text("Once upon a time");
  r.set_max_new_tokens(max_new_tokens);
  r.set_ignore_eos(true);
  StreamOutcome out;
  auto context = Context(120s);
  auto reader = stub->GenerateStream(context.get(), r);
  v1::GenerateStreamResponse m;
  bool first = true;
  while (reader->Read(&m)) {
    if (!m.has_piece()) continue;
    out.tokens += m.piece().tokens_size();
    if (first && pieces_seen != nullptr) pieces_seen->fetch_add(1);
    first = false;
  }
  out.status = reader->Finish();
  return out;
}

// Runs `n` long streams at once (released together) and returns their outcomes.
std::vector<StreamOutcome> Flood(v1::InferenceService::Stub* stub, int n, int max_new_tokens,
                                 std::atomic<int>* pieces_seen = nullptr) {
  std::vector<StreamOutcome> outcomes(n);
  std::latch go(n);
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      go.arrive_and_wait();
      outcomes[i] = LongStream(stub, max_new_tokens, pieces_seen);
    });
  }
  for (auto& t : threads) t.join();
  return outcomes;
}

v1::GetServerStatsResponse ServerStats(v1::InferenceService::Stub* stub) {
  v1::GetServerStatsResponse stats;
  auto context = Context();
  EXPECT_TRUE(stub->GetServerStats(context.get(), v1::GetServerStatsRequest(), &stats).ok());
  return stats;
}

class AdmissionE2E : public NeedsModelTest {
 protected:
  std::unique_ptr<ServerProcess> Start(const std::vector<std::string>& extra) {
    std::vector<std::string> args = {"--model", kModelDir, "--listen", "127.0.0.1:0"};
    args.insert(args.end(), extra.begin(), extra.end());
    auto server = ServerProcess::Start(BRICKSERVE_BINARY, args, 120s);
    EXPECT_TRUE(server.ok()) << server.status();
    return server.ok() ? *std::move(server) : nullptr;
  }
};

// One request runs and two may wait: of twelve streams sent at once the excess is refused at once
// (no message streamed) and the accepted ones generate every token.
TEST_F(AdmissionE2E, FloodBeyondTheQueueIsResourceExhaustedAndAcceptedCallsComplete) {
  auto server = Start({"--max-running-requests", "1", "--max-queued-requests", "2"});
  ASSERT_NE(server, nullptr);
  auto stub = v1::InferenceService::NewStub(grpc::CreateChannel(server->address(), grpc::InsecureChannelCredentials()));
  constexpr int kTokens = 400;
  const auto outcomes = Flood(stub.get(), 12, kTokens);
  int accepted = 0, refused = 0;
  for (const auto& o : outcomes) {
    if (o.status.ok()) {
      ++accepted;
      EXPECT_EQ(o.tokens, kTokens);
    } else {
      ++refused;
      EXPECT_EQ(o.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << o.status.error_message();
      EXPECT_THAT(o.status.error_message(), HasSubstr("max_queued_requests = 2"));
      EXPECT_EQ(o.tokens, 0);
    }
  }
  EXPECT_GT(refused, 0);
  EXPECT_GE(accepted, 2);
  // A call is counted when the server frees it, just after its last message: wait for that.
  v1::GetServerStatsResponse stats;
  EXPECT_TRUE(Eventually([&] {
    stats = ServerStats(stub.get());
    return stats.active_requests() == 0;
  }));
  EXPECT_EQ(stats.rejected_requests(), refused);
  EXPECT_EQ(stats.completed_requests(), accepted);
  EXPECT_EQ(server->Stop(20s), 0);
}

// A 128-token KV pool (8 blocks of 16) and eight concurrent greedy requests of 40 + 80 tokens: they
// cannot all grow at once, so some are preempted and recomputed, and every output still equals
// the one the request gets alone. A repeated 72-token prompt reuses its first 64 tokens' blocks.
TEST_F(AdmissionE2E, PreemptionAndPrefixReuseShowInUsageWithOutputsUnchanged) {
  auto server = Start({"--kv-cache-tokens", "128", "--max-running-requests", "8"});
  ASSERT_NE(server, nullptr);
  auto stub = v1::InferenceService::NewStub(grpc::CreateChannel(server->address(), grpc::InsecureChannelCredentials()));
  std::mt19937 rng(std::random_device{}());
  auto request = [&](int prompt_tokens, int new_tokens) {
    v1::GenerateRequest r;
    for (int i = 0; i < prompt_tokens; ++i) r.mutable_token_ids()->add_ids(3 + static_cast<int>(rng() % 8000));
    r.set_max_new_tokens(new_tokens);
    r.set_ignore_eos(true);
    return r;
  };
  auto generate = [&](const v1::GenerateRequest& r, v1::GenerateResponse* out) {
    auto context = Context();
    return stub->Generate(context.get(), r, out);
  };
  auto ids = [](const v1::GenerateResponse& r) {
    std::vector<int32_t> v;
    for (const auto& t : r.tokens()) v.push_back(t.id());
    return v;
  };

  const v1::GenerateRequest repeated = request(72, 4);
  v1::GenerateResponse first, second;
  ASSERT_TRUE(generate(repeated, &first).ok());
  ASSERT_TRUE(generate(repeated, &second).ok());
  EXPECT_EQ(first.usage().cached_prompt_tokens(), 0);
  EXPECT_EQ(second.usage().cached_prompt_tokens(), 64);
  EXPECT_EQ(ids(second), ids(first));

  constexpr int kRequests = 8;
  std::vector<v1::GenerateRequest> requests;
  std::vector<std::vector<int32_t>> alone;
  for (int i = 0; i < kRequests; ++i) {
    requests.push_back(request(40, 80));
    v1::GenerateResponse out;
    ASSERT_TRUE(generate(requests.back(), &out).ok());
    alone.push_back(ids(out));
  }
  std::vector<v1::GenerateResponse> together(kRequests);
  std::vector<grpc::Status> status(kRequests);
  std::latch go(kRequests);
  std::vector<std::thread> threads;
  for (int i = 0; i < kRequests; ++i) {
    threads.emplace_back([&, i] {
      go.arrive_and_wait();
      status[i] = generate(requests[i], &together[i]);
    });
  }
  for (auto& t : threads) t.join();
  int preemptions = 0;
  for (int i = 0; i < kRequests; ++i) {
    ASSERT_TRUE(status[i].ok()) << status[i].error_message();
    EXPECT_EQ(ids(together[i]), alone[i]) << "request " << i << " (preempted "
                                         << together[i].usage().preemptions() << " times)";
    preemptions += together[i].usage().preemptions();
  }
  EXPECT_GT(preemptions, 0);
  // The engine lets go of a request's blocks just after its response is written: wait for that.
  v1::GetServerStatsResponse stats;
  EXPECT_TRUE(Eventually([&] {
    stats = ServerStats(stub.get());
    return stats.active_requests() == 0 && stats.running_requests() == 0;
  }));
  EXPECT_EQ(stats.preemptions(), preemptions);
  EXPECT_GE(stats.prefix_cache_hit_tokens(), 64);
  EXPECT_EQ(stats.kv_blocks_total(), 8);
  EXPECT_EQ(stats.kv_blocks_in_use(), 0);
  EXPECT_EQ(stats.running_requests(), 0);
  EXPECT_EQ(server->Stop(20s), 0);
}

// Sixteen streams run one at a time, far more work than the 1 s grace period: the one generating
// when SIGTERM arrives, and those still queued, end with UNAVAILABLE naming the grace period;
// nothing hangs and the process exits 0.
TEST_F(AdmissionE2E, GracePeriodCutsTheCallsStillInFlightWithUnavailable) {
  auto server = Start({"--max-running-requests", "1", "--shutdown-grace-s", "1"});
  ASSERT_NE(server, nullptr);
  auto stub = v1::InferenceService::NewStub(grpc::CreateChannel(server->address(), grpc::InsecureChannelCredentials()));
  constexpr int kStreams = 16, kTokens = 480;
  std::atomic<int> pieces_seen{0};
  std::vector<StreamOutcome> outcomes;
  std::thread flood([&] { outcomes = Flood(stub.get(), kStreams, kTokens, &pieces_seen); });
  // SIGTERM once the first stream is generating and every call has reached the server.
  const bool started = Eventually([&] {
    v1::GetServerStatsResponse stats;
    auto context = Context();
    return pieces_seen.load() > 0 && stub->GetServerStats(context.get(), v1::GetServerStatsRequest(), &stats).ok() &&
           stats.total_requests() >= kStreams;
  });
  const auto signalled = std::chrono::steady_clock::now();
  ASSERT_EQ(kill(server->pid(), SIGTERM), 0);
  const int exit_code = server->Stop(30s);
  const double shutdown_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - signalled).count();
  flood.join();
  ASSERT_TRUE(started) << "the streams never all reached the server";
  EXPECT_EQ(exit_code, 0);
  EXPECT_LT(shutdown_s, 15.0) << "the grace period (1 s) bounds the drain";

  int completed = 0, cut = 0;
  for (const auto& o : outcomes) {
    if (o.status.ok()) {
      ++completed;
      EXPECT_EQ(o.tokens, kTokens);
    } else {
      ++cut;
      EXPECT_EQ(o.status.error_code(), grpc::StatusCode::UNAVAILABLE) << o.status.error_message();
      EXPECT_THAT(o.status.error_message(), HasSubstr("shutdown grace period 1 s"));
    }
  }
  EXPECT_GT(cut, 0) << completed << " of " << kStreams << " streams completed within the grace period";
}

}  // namespace
}  // namespace brickserve::testing
