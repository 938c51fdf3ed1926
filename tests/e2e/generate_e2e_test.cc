// Generation through the real server: unary and streamed output equal the engine's own (the float64
// reference decode for greedy, an in-process Engine for sampling, logprobs and stops), and a
// cancelled or timed-out call stops generating and frees its request at once.
#include <algorithm>
#include <condition_variable>
#include <fstream>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "engine/engine.h"
#include "nlohmann/json.hpp"
#include "server_fixture.h"

namespace brickserve::testing {
namespace {

using namespace std::chrono_literals;

class GenerateE2E : public ServerTest {
 protected:
  static void SetUpTestSuite() {
    ServerTest::SetUpTestSuite();
    if (!HaveModel()) return;
    std::ifstream in(kModelDir + "/reference/greedy.json");
    reference_ = new nlohmann::json(nlohmann::json::parse(in));
    EngineOptions o;
    o.model_dir = kModelDir;
    auto e = Engine::Load(o);
    ASSERT_TRUE(e.ok()) << e.status();
    engine_ = e->release();
  }
  static void TearDownTestSuite() {
    ServerTest::TearDownTestSuite();
    delete engine_;
    delete reference_;
    engine_ = nullptr;
    reference_ = nullptr;
  }

  // The request of a reference case: its prompt ids, as many tokens as the reference, past EOS.
  static v1::GenerateRequest GreedyRequest(const nlohmann::json& c) {
    v1::GenerateRequest r;
    for (int id : c["prompt_ids"]) r.mutable_token_ids()->add_ids(id);
    r.set_max_new_tokens(static_cast<int>(c["greedy_ids"].size()));
    r.set_ignore_eos(true);
    return r;
  }

  struct Streamed {
    grpc::Status status;
    std::string text;
    std::vector<int32_t> ids;
    std::vector<float> logprobs;
    int pieces = 0;
    int finals = 0;
    bool final_was_last = true;
    v1::GenerateFinal final;
  };
  static Streamed Stream(const v1::GenerateRequest& r) {
    Streamed s;
    auto context = Context();
    auto reader = stub_->GenerateStream(context.get(), r);
    v1::GenerateStreamResponse m;
    while (reader->Read(&m)) {
      if (s.finals > 0) s.final_was_last = false;
      if (m.has_piece()) {
        ++s.pieces;
        s.text += m.piece().text();
        for (const auto& t : m.piece().tokens()) {
          s.ids.push_back(t.id());
          s.logprobs.push_back(t.logprob());
        }
      } else if (m.has_final()) {
        ++s.finals;
        s.final = m.final();
      }
    }
    s.status = reader->Finish();
    return s;
  }

  static std::vector<int32_t> Ids(const v1::GenerateResponse& r) {
    std::vector<int32_t> ids;
    for (const auto& t : r.tokens()) ids.push_back(t.id());
    return ids;
  }

  // The engine's own answer to the same request, converted as the server converts it.
  static GenerationResult EngineResult(const v1::GenerateRequest& r) {
    GenerationRequest g;
    if (r.has_text()) g.prompt_ids = engine_->tokenizer().Encode(r.text(), true);
    else g.prompt_ids.assign(r.token_ids().ids().begin(), r.token_ids().ids().end());
    g.max_new_tokens = r.max_new_tokens();
    g.sampling.temperature = r.sampling().temperature();
    g.sampling.top_k = r.sampling().top_k();
    if (r.sampling().has_top_p()) g.sampling.top_p = r.sampling().top_p();
    if (r.sampling().has_seed()) g.sampling.seed = r.sampling().seed();
    g.stop_strings.assign(r.stop().begin(), r.stop().end());
    g.stop_token_ids.assign(r.stop_token_ids().begin(), r.stop_token_ids().end());
    g.ignore_eos = r.ignore_eos();
    g.logprobs = r.logprobs();
    g.top_logprobs = r.top_logprobs();
    auto result = engine_->Generate(g);
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? *result : GenerationResult();
  }

  // A request that would run for a long time: the whole context, past EOS.
  static v1::GenerateRequest LongRequest() {
    v1::GenerateRequest r;
    r.set_text("The kernel uses a");
    r.set_max_new_tokens(500);
    r.set_ignore_eos(true);
    return r;
  }

  // How long LongRequest() takes here when it runs alone (the fastest of three: the first runs on
  // a cold server): tests that must act while it runs scale to it instead of assuming a speed (the
  // whole context can take under 0.1 s).
  std::chrono::milliseconds LongRequestTime() {
    static const std::chrono::milliseconds measured = [this] {
      auto fastest = std::chrono::milliseconds::max();
      for (int i = 0; i < 3; ++i) {
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() + 120s);
        v1::GenerateResponse resp;
        const auto start = std::chrono::steady_clock::now();
        EXPECT_TRUE(stub_->Generate(&context, LongRequest(), &resp).ok());
        fastest = std::min(fastest, std::chrono::duration_cast<std::chrono::milliseconds>(
                                        std::chrono::steady_clock::now() - start));
      }
      // The server counts a call as done just after answering it: let the counters settle before
      // the caller takes its "before" snapshot.
      EXPECT_TRUE(Eventually([&] { return Stats().active_requests() == 0; }));
      return fastest;
    }();
    return measured;
  }
  // A deadline that expires a fifth of the way into LongRequest() (at least 10 ms, at most 150 ms).
  std::chrono::milliseconds MidRequestDeadline() {
    return std::clamp(LongRequestTime() / 5, std::chrono::milliseconds(10), std::chrono::milliseconds(150));
  }

  static nlohmann::json* reference_;
  static Engine* engine_;
};
nlohmann::json* GenerateE2E::reference_ = nullptr;
Engine* GenerateE2E::engine_ = nullptr;

TEST_F(GenerateE2E, UnaryGreedyEqualsTheReferenceDecode) {
  for (const auto& c : (*reference_)["cases"]) {
    v1::GenerateResponse resp;
    auto context = Context();
    grpc::Status status = stub_->Generate(context.get(), GreedyRequest(c), &resp);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(Ids(resp), c["greedy_ids"].get<std::vector<int32_t>>()) << c["prompt"];
    // The text extends the prompt's text (a SentencePiece leading space is kept, as in vLLM), so it
    // is the engine's text, not the reference's continuation decoded alone.
    EXPECT_EQ(resp.text(), EngineResult(GreedyRequest(c)).text) << c["prompt"];
    EXPECT_EQ(resp.finish_reason(), v1::FINISH_REASON_LENGTH);
    EXPECT_EQ(resp.usage().prompt_tokens(), static_cast<int>(c["prompt_ids"].size()));
    EXPECT_EQ(resp.usage().completion_tokens(), static_cast<int>(c["greedy_ids"].size()));
    EXPECT_FALSE(resp.tokens(0).has_logprob());  // not asked for
  }
}

TEST_F(GenerateE2E, StreamedGreedyEqualsTheReferenceDecode) {
  for (const auto& c : (*reference_)["cases"]) {
    Streamed s = Stream(GreedyRequest(c));
    ASSERT_TRUE(s.status.ok()) << s.status.error_message();
    EXPECT_EQ(s.ids, c["greedy_ids"].get<std::vector<int32_t>>()) << c["prompt"];
    EXPECT_EQ(s.text, EngineResult(GreedyRequest(c)).text) << c["prompt"];
    EXPECT_GT(s.pieces, 1);  // streamed in pieces, not in one message
    EXPECT_EQ(s.finals, 1);
    EXPECT_TRUE(s.final_was_last);
    EXPECT_EQ(s.final.finish_reason(), v1::FINISH_REASON_LENGTH);
    EXPECT_EQ(s.final.usage().completion_tokens(), static_cast<int>(c["greedy_ids"].size()));
  }
}

TEST_F(GenerateE2E, TextPromptIsEncodedLikeTheReference) {
  const auto& c = (*reference_)["cases"][0];
  v1::GenerateRequest r = GreedyRequest(c);
  r.set_text(c["prompt"].get<std::string>());  // replaces the token ids (oneof)
  v1::GenerateResponse resp;
  auto context = Context();
  ASSERT_TRUE(stub_->Generate(context.get(), r, &resp).ok());
  EXPECT_EQ(Ids(resp), c["greedy_ids"].get<std::vector<int32_t>>());
}

TEST_F(GenerateE2E, SeededSamplingWithLogprobsEqualsTheEngine) {
  v1::GenerateRequest r;
  r.set_text("int main(void) {");
  r.set_max_new_tokens(24);
  r.set_ignore_eos(true);
  r.mutable_sampling()->set_temperature(0.9f);
  r.mutable_sampling()->set_top_k(50);
  r.mutable_sampling()->set_top_p(0.95f);
  r.mutable_sampling()->set_seed(1234);
  r.set_logprobs(true);
  r.set_top_logprobs(3);
  const GenerationResult expected = EngineResult(r);

  v1::GenerateResponse resp;
  auto context = Context();
  ASSERT_TRUE(stub_->Generate(context.get(), r, &resp).ok());
  EXPECT_EQ(Ids(resp), expected.token_ids());
  EXPECT_EQ(resp.text(), expected.text);
  ASSERT_EQ(resp.tokens_size(), static_cast<int>(expected.tokens.size()));
  for (int i = 0; i < resp.tokens_size(); ++i) {
    const auto& t = resp.tokens(i);
    ASSERT_TRUE(t.has_logprob());
    EXPECT_NEAR(t.logprob(), expected.tokens[i].logprob, 1e-4) << i;
    ASSERT_EQ(t.top_logprobs_size(), 3);
    for (int k = 0; k < 3; ++k) {
      EXPECT_EQ(t.top_logprobs(k).id(), expected.tokens[i].top[k].id) << i;
      EXPECT_NEAR(t.top_logprobs(k).logprob(), expected.tokens[i].top[k].logprob, 1e-4) << i;
    }
  }

  Streamed s = Stream(r);
  ASSERT_TRUE(s.status.ok()) << s.status.error_message();
  EXPECT_EQ(s.ids, expected.token_ids());
  EXPECT_EQ(s.text, expected.text);
  ASSERT_EQ(s.logprobs.size(), expected.tokens.size());
  for (size_t i = 0; i < s.logprobs.size(); ++i) EXPECT_NEAR(s.logprobs[i], expected.tokens[i].logprob, 1e-4);
}

TEST_F(GenerateE2E, StopStringAndStopTokenEqualTheEngine) {
  const auto& c = (*reference_)["cases"][0];
  const auto greedy_ids = c["greedy_ids"].get<std::vector<int32_t>>();
  v1::GenerateRequest by_string = GreedyRequest(c);
  by_string.add_stop("tool");
  v1::GenerateRequest by_token = GreedyRequest(c);
  by_token.add_stop_token_ids(greedy_ids[4]);
  for (const auto& r : {by_string, by_token}) {
    const GenerationResult expected = EngineResult(r);
    ASSERT_EQ(expected.finish_reason, FinishReason::kStop);  // the case must really stop early
    v1::GenerateResponse resp;
    auto context = Context();
    ASSERT_TRUE(stub_->Generate(context.get(), r, &resp).ok());
    EXPECT_EQ(resp.finish_reason(), v1::FINISH_REASON_STOP);
    EXPECT_EQ(resp.text(), expected.text);
    EXPECT_EQ(resp.matched_stop(), expected.matched_stop);
    EXPECT_EQ(Ids(resp), expected.token_ids());
    Streamed s = Stream(r);
    ASSERT_TRUE(s.status.ok());
    EXPECT_EQ(s.text, expected.text);
    EXPECT_EQ(s.ids, expected.token_ids());
    EXPECT_EQ(s.final.finish_reason(), v1::FINISH_REASON_STOP);
    EXPECT_EQ(s.final.matched_stop(), expected.matched_stop);
  }
}

TEST_F(GenerateE2E, CancellingAStreamStopsGenerationAndFreesTheRequest) {
  const auto before = Stats();
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + 60s);
  auto reader = stub_->GenerateStream(&context, LongRequest());
  v1::GenerateStreamResponse first;
  ASSERT_TRUE(reader->Read(&first));
  ASSERT_TRUE(first.has_piece());
  EXPECT_EQ(Stats().active_requests(), before.active_requests() + 1);
  context.TryCancel();
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);

  const auto after = StatsOnceFreed(before, &v1::GetServerStatsResponse::cancelled_requests);
  EXPECT_EQ(after.completed_requests(), before.completed_requests());
  // It stopped early: far fewer than the 500 tokens asked for.
  EXPECT_LT(after.generated_tokens() - before.generated_tokens(), 500);
}

TEST_F(GenerateE2E, StreamPastItsDeadlineIsDeadlineExceededAndFreed) {
  const auto deadline = MidRequestDeadline();
  const auto before = Stats();
  auto context = Context(deadline);
  auto reader = stub_->GenerateStream(context.get(), LongRequest());
  v1::GenerateStreamResponse m;
  while (reader->Read(&m)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  const auto after = StatsOnceFreed(before, &v1::GetServerStatsResponse::deadline_exceeded_requests);
  EXPECT_EQ(after.completed_requests(), before.completed_requests());
  EXPECT_LT(after.generated_tokens() - before.generated_tokens(), 500);
}

TEST_F(GenerateE2E, UnaryPastItsDeadlineIsDeadlineExceededAndFreed) {
  const auto deadline = MidRequestDeadline();
  const auto before = Stats();
  v1::GenerateResponse resp;
  auto context = Context(deadline);
  EXPECT_EQ(stub_->Generate(context.get(), LongRequest(), &resp).error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  const auto after = StatsOnceFreed(before, &v1::GetServerStatsResponse::deadline_exceeded_requests);
  EXPECT_LT(after.generated_tokens() - before.generated_tokens(), 500);
}

// A request waiting behind others leaves the queue at once when cancelled; it never reaches the
// engine. The KV pool holds one full context, so long requests run one after another: enough of
// them ahead keep the engine busy for a second or more whatever the machine's speed.
TEST_F(GenerateE2E, CancellingAQueuedRequestFreesItWithoutWaitingForTheEngine) {
  const int blockers = static_cast<int>(std::clamp<int64_t>(1000 / std::max<int64_t>(1, LongRequestTime().count()) + 1, 2, 20));
  const auto before = Stats();
  std::vector<std::unique_ptr<grpc::ClientContext>> blocker_contexts;
  std::vector<std::unique_ptr<grpc::ClientReader<v1::GenerateStreamResponse>>> blocker_readers;
  for (int i = 0; i < blockers; ++i) {
    blocker_contexts.push_back(std::make_unique<grpc::ClientContext>());
    blocker_contexts.back()->set_deadline(std::chrono::system_clock::now() + 120s);
    blocker_readers.push_back(stub_->GenerateStream(blocker_contexts.back().get(), LongRequest()));
  }
  v1::GenerateStreamResponse first;
  ASSERT_TRUE(blocker_readers[0]->Read(&first));  // the first one holds the engine now
  ASSERT_TRUE(Eventually([&] { return Stats().queued_requests() >= 1; }));

  grpc::ClientContext queued_context;
  queued_context.set_deadline(std::chrono::system_clock::now() + 120s);
  const v1::GenerateRequest queued_req = LongRequest();
  v1::GenerateResponse queued_resp;
  std::mutex mu;
  std::condition_variable cv;
  std::optional<grpc::Status> queued_status;
  stub_->async()->Generate(&queued_context, &queued_req, &queued_resp, [&](grpc::Status s) {
    std::lock_guard<std::mutex> lock(mu);
    queued_status = s;
    cv.notify_all();
  });
  auto wait_for_queued = [&] {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, 20s, [&] { return queued_status.has_value(); });
  };
  // Whatever fails below, the callback must not outlive the locals it refers to.
  auto cleanup = absl::MakeCleanup([&] {
    queued_context.TryCancel();
    for (auto& c : blocker_contexts) c->TryCancel();
    wait_for_queued();
  });
  ASSERT_TRUE(Eventually([&] { return Stats().total_requests() == before.total_requests() + blockers + 1; }));
  queued_context.TryCancel();
  ASSERT_TRUE(wait_for_queued());
  EXPECT_EQ(queued_status->error_code(), grpc::StatusCode::CANCELLED);
  // Freed while the requests ahead of it are still generating.
  v1::GetServerStatsResponse mid;
  ASSERT_TRUE(Eventually([&] {
    mid = Stats();
    return mid.cancelled_requests() == before.cancelled_requests() + 1;
  })) << mid.ShortDebugString();
  EXPECT_GE(mid.active_requests(), before.active_requests() + 1) << "the engine had finished everything first";

  for (auto& c : blocker_contexts) c->TryCancel();
  for (auto& r : blocker_readers) {
    const grpc::StatusCode code = r->Finish().error_code();
    EXPECT_TRUE(code == grpc::StatusCode::CANCELLED || code == grpc::StatusCode::OK) << code;
  }
  ASSERT_TRUE(Eventually([&] { return Stats().active_requests() == before.active_requests(); }));
}

}  // namespace
}  // namespace brickserve::testing
