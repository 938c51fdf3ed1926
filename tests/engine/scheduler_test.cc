// Continuous batching on the golden checkpoints (fresh random weights each run): concurrent
// requests give exactly the output each gives alone, through chunked prefill, preemption and
// prefix sharing; admission control, priorities and cancellation.
#include <future>
#include <random>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"

#include "engine/engine.h"
#include "engine/serving/step_cost_model.h"
#include "golden_util.h"

namespace brickserve {
namespace {

using testing::GoldenCaseNames;
using testing::LoadGoldenCase;

std::unique_ptr<Engine> LoadEngine(const std::string& dir, int kv_tokens, bool prefix_cache, int max_queued = 256,
                                   int max_running = 64, int prefill_chunk_tokens = 0, double max_step_ms = 0,
                                   double max_step_ratio = 0) {
  EngineOptions o;
  o.model_dir = dir;
  o.device.threads = 2;
  o.max_batch_tokens = 48;  // small: long prompts take several steps, mixed with decode rows
  o.kv_block_size = 4;
  o.kv_cache_tokens = kv_tokens;
  o.prefix_cache = prefix_cache;
  o.max_queued_requests = max_queued;
  o.max_running = max_running;
  o.prefill_chunk_tokens = prefill_chunk_tokens;
  o.max_step_ms = max_step_ms;
  o.max_step_ratio = max_step_ratio;  // off unless asked: step counts below must not depend on timing
  auto e = Engine::Load(o);
  EXPECT_TRUE(e.ok()) << e.status();
  return e.ok() ? *std::move(e) : nullptr;
}

// Random requests: greedy and seeded sampling, various lengths, some sharing a prompt prefix.
std::vector<GenerationRequest> RandomRequests(int n, int vocab, std::mt19937& rng) {
  std::vector<int32_t> shared(24 + rng() % 20);
  for (auto& t : shared) t = 3 + static_cast<int32_t>(rng() % (vocab - 3));
  std::vector<GenerationRequest> out;
  for (int i = 0; i < n; ++i) {
    GenerationRequest r;
    if (i % 3 == 0) r.prompt_ids = shared;
    const int extra = 1 + static_cast<int>(rng() % 60);
    for (int k = 0; k < extra; ++k) r.prompt_ids.push_back(3 + static_cast<int32_t>(rng() % (vocab - 3)));
    r.max_new_tokens = 1 + static_cast<int>(rng() % 24);
    r.ignore_eos = true;
    if (i % 2 == 1) {
      r.sampling.temperature = 0.9f;
      r.sampling.top_p = 0.95f;
      r.sampling.seed = rng();
    }
    out.push_back(std::move(r));
  }
  return out;
}

// Submits every request at once and waits for all results.
std::vector<absl::StatusOr<GenerationResult>> RunConcurrently(Engine& engine, const std::vector<GenerationRequest>& rs) {
  std::vector<std::promise<absl::StatusOr<GenerationResult>>> done(rs.size());
  for (size_t i = 0; i < rs.size(); ++i) {
    auto id = engine.Submit(rs[i], {}, {}, [&done, i](absl::StatusOr<GenerationResult> r) { done[i].set_value(std::move(r)); });
    EXPECT_TRUE(id.ok()) << id.status();
    if (!id.ok()) done[i].set_value(id.status());
  }
  std::vector<absl::StatusOr<GenerationResult>> out;
  for (auto& d : done) out.push_back(d.get_future().get());
  return out;
}

class SchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (GoldenCaseNames().empty()) GTEST_SKIP() << "no golden cases: run tests/reference/make_golden.py";
  }
};

TEST_F(SchedulerTest, BatchedOutputEqualsEachRequestAloneWithPreemptionAndPrefixSharing) {
  std::mt19937 rng(std::random_device{}());
  for (const std::string name : {"llama_gqa_bf16", "qwen2_bias_tied_f32"}) {
    const auto c = LoadGoldenCase(name);
    auto alone = LoadEngine(c.dir, 0, /*prefix_cache=*/false);
    ASSERT_NE(alone, nullptr);
    const auto requests = RandomRequests(8 + static_cast<int>(rng() % 25), alone->config().vocab_size, rng);
    std::vector<std::vector<int32_t>> want;
    for (const auto& r : requests) {
      auto out = alone->Generate(r);
      ASSERT_TRUE(out.ok()) << out.status();
      want.push_back(out->token_ids());
    }
    // A roomy pool, then one so small that requests are preempted and recomputed.
    for (int kv_tokens : {4096, 160}) {
      const int chunk = rng() % 2 == 0 ? 0 : 1 + static_cast<int>(rng() % 16);
      auto batched = LoadEngine(c.dir, kv_tokens, /*prefix_cache=*/true, 256, 64, chunk);
      ASSERT_NE(batched, nullptr);
      // The first request alone first, so the later ones sharing its prefix find it cached.
      ASSERT_EQ(batched->Generate(requests[0])->token_ids(), want[0]);
      const auto got = RunConcurrently(*batched, requests);
      ASSERT_TRUE(batched->WaitUntilIdle(Clock::now() + std::chrono::seconds(10)));
      for (size_t i = 0; i < requests.size(); ++i) {
        ASSERT_TRUE(got[i].ok()) << got[i].status();
        EXPECT_EQ(got[i]->token_ids(), want[i]) << name << " request " << i << " of " << requests.size()
                                                << ", KV pool " << kv_tokens << " tokens, prefill chunk " << chunk;
      }
      const EngineStats s = batched->Stats();
      if (kv_tokens == 4096) EXPECT_GT(s.prefix_cache_hit_tokens, 0u) << "requests sharing a prefix reused its blocks";
      EXPECT_EQ(s.running_requests, 0);
      EXPECT_EQ(s.kv_blocks_in_use, 0) << "every block was returned";
      EXPECT_EQ(s.requests_finished, requests.size() + 1);
    }
  }
}

// Four requests admitted in one step whose growth cannot fit a 64-token pool: preemption is
// certain, and the preempted ones still finish with their own output.
TEST_F(SchedulerTest, PreemptedRequestsCompleteWithTheirOwnOutput) {
  std::mt19937 rng(std::random_device{}());
  const auto c = LoadGoldenCase("llama_mha_f32");
  auto alone = LoadEngine(c.dir, 0, false);
  auto small = LoadEngine(c.dir, 64, true);
  ASSERT_NE(alone, nullptr);
  ASSERT_NE(small, nullptr);
  std::vector<GenerationRequest> requests(4);
  std::vector<std::vector<int32_t>> want;
  for (size_t i = 0; i < requests.size(); ++i) {
    auto& r = requests[i];
    for (int k = 0; k < 10; ++k) r.prompt_ids.push_back(3 + static_cast<int32_t>(rng() % 300));
    r.max_new_tokens = 40;
    r.ignore_eos = true;
    if (i % 2 == 1) {
      r.sampling.temperature = 1.0f;
      r.sampling.seed = rng();
    }
    want.push_back(alone->Generate(r)->token_ids());
  }
  const auto got = RunConcurrently(*small, requests);
  ASSERT_TRUE(small->WaitUntilIdle(Clock::now() + std::chrono::seconds(10)));
  for (size_t i = 0; i < requests.size(); ++i) {
    ASSERT_TRUE(got[i].ok()) << got[i].status();
    EXPECT_EQ(got[i]->token_ids(), want[i]) << "request " << i;
  }
  EXPECT_GT(small->Stats().preemptions, 0u);
  EXPECT_EQ(small->Stats().kv_blocks_in_use, 0);
}

TEST_F(SchedulerTest, FullQueueRefusesAtOnceAndAcceptedRequestsComplete) {
  const auto c = LoadGoldenCase(GoldenCaseNames().front());
  auto engine = LoadEngine(c.dir, 0, true, /*max_queued=*/3, /*max_running=*/1);
  ASSERT_NE(engine, nullptr);
  GenerationRequest r;
  r.prompt_ids = c.prompt_ids;
  r.max_new_tokens = 40;
  r.ignore_eos = true;
  std::atomic<int> completed{0};
  int accepted = 0, refused = 0;
  for (int i = 0; i < 12; ++i) {
    auto id = engine->Submit(r, {}, {}, [&](absl::StatusOr<GenerationResult> out) {
      if (out.ok() && out->completion_tokens == 40) completed.fetch_add(1);
    });
    if (id.ok()) {
      ++accepted;
    } else {
      ++refused;
      EXPECT_EQ(id.status().code(), absl::StatusCode::kResourceExhausted);
      EXPECT_THAT(std::string(id.status().message()), ::testing::HasSubstr("max_queued_requests = 3"));
    }
  }
  EXPECT_GT(refused, 0);
  ASSERT_TRUE(engine->WaitUntilIdle(Clock::now() + std::chrono::seconds(60)));
  EXPECT_EQ(completed.load(), accepted);
  EXPECT_EQ(engine->Stats().requests_rejected, static_cast<uint64_t>(refused));
}

TEST_F(SchedulerTest, HigherPriorityRunsFirstAndCancelledQueuedRequestsLeave) {
  const auto c = LoadGoldenCase(GoldenCaseNames().front());
  auto engine = LoadEngine(c.dir, 0, true, 256, /*max_running=*/1);
  ASSERT_NE(engine, nullptr);
  GenerationRequest r;
  r.prompt_ids = c.prompt_ids;
  r.max_new_tokens = 30;
  r.ignore_eos = true;
  std::mutex mu;
  std::vector<std::string> order;
  std::promise<void> first_running, others_submitted;
  std::shared_future<void> go = others_submitted.get_future().share();
  auto submit = [&](const std::string& tag, int priority, int max_new_tokens = 30) {
    SubmitOptions o;
    o.priority = priority;
    GenerationRequest req = r;
    req.max_new_tokens = max_new_tokens;
    StreamCallback on_piece;
    if (tag == "first") {
      on_piece = [&, signalled = false](const StreamPiece&) mutable {
        if (!signalled) {
          // Holds the scheduler (inside "first"'s step) until the others are queued.
          first_running.set_value();
          go.wait();
        }
        signalled = true;
        return true;
      };
    }
    auto id = engine->Submit(req, o, on_piece, [&, tag](absl::StatusOr<GenerationResult> out) {
      std::lock_guard<std::mutex> lock(mu);
      order.push_back(out.ok() && out->finish_reason == FinishReason::kCancelled ? tag + ":cancelled" : tag);
    });
    EXPECT_TRUE(id.ok());
    return id.ok() ? *id : 0;
  };
  submit("first", 0, 200);
  first_running.get_future().wait();
  submit("low", 0);
  const uint64_t doomed = submit("doomed", 0);
  submit("high", 5);
  engine->Cancel(doomed);
  others_submitted.set_value();
  ASSERT_TRUE(engine->WaitUntilIdle(Clock::now() + std::chrono::seconds(60)));
  // One request runs at a time: "high" takes the place of "first" (lower priority), which resumes
  // after it, ahead of the younger "low".
  const std::vector<std::string> want = {"doomed:cancelled", "high", "first", "low"};
  EXPECT_EQ(order, want);
  EXPECT_GE(engine->Stats().preemptions, 1u);
}

// "high" arrives while "first" holds most of a 64-token pool: the pool, not the batch size, is
// what stands in its way, and "first" (lower priority) is preempted for it, then finishes with
// the output it has alone.
TEST_F(SchedulerTest, HigherPriorityPreemptsWhenTheKvPoolIsShort) {
  std::mt19937 rng(std::random_device{}());
  const auto c = LoadGoldenCase("llama_mha_f32");
  auto alone = LoadEngine(c.dir, 0, false);
  auto engine = LoadEngine(c.dir, 64, false);  // 16 blocks of 4 tokens
  ASSERT_NE(alone, nullptr);
  ASSERT_NE(engine, nullptr);
  auto make = [&](int prompt_len) {
    GenerationRequest r;
    for (int k = 0; k < prompt_len; ++k) r.prompt_ids.push_back(3 + static_cast<int32_t>(rng() % 300));
    r.max_new_tokens = 20;
    r.ignore_eos = true;
    return r;
  };
  // "first" must stream text from its first token on (the hold below runs at its first piece, and
  // a piece carries text: tokens that decode to no text yet, such as part of a UTF-8 character,
  // would delay it). A random prompt whose greedy output starts with such tokens is drawn again.
  GenerationRequest first;
  std::vector<int32_t> want_first;
  for (int attempt = 0; attempt < 50 && want_first.empty(); ++attempt) {
    first = make(40);
    size_t first_piece_tokens = 0;
    auto out = alone->Generate(first, [&](const StreamPiece& p) {
      if (first_piece_tokens == 0) first_piece_tokens = p.tokens.size();
      return true;
    });
    ASSERT_TRUE(out.ok()) << out.status();
    if (first_piece_tokens == 1) want_first = out->token_ids();
  }
  ASSERT_FALSE(want_first.empty()) << "no prompt in 50 streams text from its first generated token";
  const GenerationRequest high = make(30);  // "first" holds 10 blocks; "high" needs 8 more
  const auto want_high = alone->Generate(high)->token_ids();

  std::mutex mu;
  std::vector<std::string> order;
  std::promise<absl::StatusOr<GenerationResult>> first_out, high_out;
  std::promise<void> first_running, high_submitted;
  std::shared_future<void> go = high_submitted.get_future().share();
  auto on_done = [&](const std::string& tag, std::promise<absl::StatusOr<GenerationResult>>* out) {
    return [&, tag, out](absl::StatusOr<GenerationResult> r) {
      {
        std::lock_guard<std::mutex> lock(mu);
        order.push_back(tag);
      }
      out->set_value(std::move(r));
    };
  };
  StreamCallback hold = [&, signalled = false](const StreamPiece&) mutable {
    if (!signalled) {
      signalled = true;
      first_running.set_value();
      go.wait();  // the scheduler waits inside "first"'s first step until "high" is queued
    }
    return true;
  };
  ASSERT_TRUE(engine->Submit(first, {}, hold, on_done("first", &first_out)).ok());
  first_running.get_future().wait();
  SubmitOptions urgent;
  urgent.priority = 5;
  ASSERT_TRUE(engine->Submit(high, urgent, {}, on_done("high", &high_out)).ok());
  high_submitted.set_value();

  const auto got_first = first_out.get_future().get();
  const auto got_high = high_out.get_future().get();
  ASSERT_TRUE(got_first.ok()) << got_first.status();
  ASSERT_TRUE(got_high.ok()) << got_high.status();
  EXPECT_EQ(order, (std::vector<std::string>{"high", "first"}));
  EXPECT_EQ(got_first->token_ids(), want_first);
  EXPECT_EQ(got_high->token_ids(), want_high);
  EXPECT_GE(got_first->preemptions, 1);
  EXPECT_EQ(got_high->preemptions, 0);
}

// Steps from the one in which "first" (decoding) is held until "second" (a 40-token prompt, one
// new token) is done: the step "first" is held in, plus every step "second"'s prompt chunks take.
int64_t StepsToPrefillBesideADecode(Engine& engine) {
  GenerationRequest first, second;
  first.prompt_ids = {5, 6, 7};
  // Long enough to still decode through "second"'s chunks even if its first text (which runs the
  // hold) comes some tokens late.
  first.max_new_tokens = 120;
  first.ignore_eos = true;
  for (int k = 0; k < 40; ++k) second.prompt_ids.push_back(10 + k);
  second.max_new_tokens = 1;  // done in the step of its last chunk
  second.ignore_eos = true;
  // Stats().steps counts completed steps: read while "first" holds step k (k - 1 done) and when
  // "second" is done (after its step is counted).
  std::atomic<int64_t> steps_at_submit{-1}, steps_at_second{-1};
  std::promise<void> first_running, second_submitted;
  std::shared_future<void> go = second_submitted.get_future().share();
  StreamCallback hold = [&, held = false](const StreamPiece&) mutable {
    if (!held) {
      held = true;
      first_running.set_value();
      go.wait();
    }
    return true;
  };
  EXPECT_TRUE(engine.Submit(first, {}, hold, [](absl::StatusOr<GenerationResult>) {}).ok());
  first_running.get_future().wait();
  steps_at_submit = static_cast<int64_t>(engine.Stats().steps);
  EXPECT_TRUE(engine.Submit(second, {}, {}, [&](absl::StatusOr<GenerationResult>) {
    steps_at_second = static_cast<int64_t>(engine.Stats().steps);
  }).ok());
  second_submitted.set_value();
  EXPECT_TRUE(engine.WaitUntilIdle(Clock::now() + std::chrono::seconds(30)));
  return steps_at_second.load() - steps_at_submit.load();
}

// While "first" decodes, "second"'s 40-token prompt is added 8 tokens per step: five steps, each
// with a decode row of "first", instead of one 41-row step.
TEST_F(SchedulerTest, PrefillChunkCapsPromptRowsWhileOthersDecode) {
  const auto c = LoadGoldenCase("llama_mha_f32");
  for (int chunk : {0, 8}) {
    auto engine = LoadEngine(c.dir, 0, false, 256, 64, chunk);
    ASSERT_NE(engine, nullptr);
    const int64_t steps = StepsToPrefillBesideADecode(*engine);
    if (chunk == 0) {
      EXPECT_EQ(steps, 1 + 1) << "step k, then the whole prompt in one step";
    } else {
      EXPECT_EQ(steps, 1 + 40 / 8) << "step k, then five 8-token chunks, each in its own step";
    }
  }
}

// A step time target sizes the chunks from measured step times: one no step can meet leaves the
// floor of one KV block (4 tokens here) per step; one every step meets leaves the prompt whole.
// The target is max_step_ms, or max_step_ratio times a lone decode step's predicted time; with both
// 0 there is none (the gauge says 0) and prompts go in whole.
TEST_F(SchedulerTest, StepTimeTargetSizesPromptChunksWhileOthersDecode) {
  const auto c = LoadGoldenCase("llama_mha_f32");
  struct Target {
    double ms, ratio;
    bool tight;
  };
  for (const Target t : {Target{1e-9, 0, true}, Target{1e9, 0, false}, Target{0, 1e-9, true},
                         Target{0, 1e9, false}, Target{1e9, 1e-9, false}, Target{0, 0, false}}) {
    SCOPED_TRACE(absl::StrCat("max_step_ms ", t.ms, ", max_step_ratio ", t.ratio));
    auto engine = LoadEngine(c.dir, 0, false, 256, 64, 0, t.ms, t.ratio);
    ASSERT_NE(engine, nullptr);
    EXPECT_EQ(engine->Stats().step_time_target_s, 0) << "nothing learned yet";
    // Steps of several sizes to learn from (a prompt step, then decode steps).
    GenerationRequest warm;
    warm.prompt_ids = {5, 6, 7, 8, 9, 10, 11, 12};
    warm.max_new_tokens = 2 * StepCostModel::kMinSteps;
    warm.ignore_eos = true;
    ASSERT_TRUE(engine->Generate(warm).ok());
    const double target = engine->Stats().step_time_target_s;
    if (t.ms > 0) {
      EXPECT_DOUBLE_EQ(target, t.ms * 1e-3) << "max_step_ms wins over the ratio";
    } else if (t.ratio == 0) {
      EXPECT_EQ(target, 0) << "no target";
    } else {
      EXPECT_GT(target, 0);
      EXPECT_EQ(target < 1, t.tight) << target;
    }
    const int64_t steps = StepsToPrefillBesideADecode(*engine);
    if (t.tight) {
      EXPECT_EQ(steps, 1 + 40 / 4) << "step k, then ten 4-token chunks (one KV block each)";
    } else {
      EXPECT_EQ(steps, 1 + 1) << "step k, then the whole prompt in one step";
    }
  }
}

}  // namespace
}  // namespace brickserve
