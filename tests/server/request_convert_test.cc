// Request validation and conversion against the real brick-tiny model (vocabulary 8192, context
// 512): every refusal names the field and the limit, and a valid request becomes the engine request.
#include "server/request_convert.h"

#include <cmath>
#include <filesystem>
#include <string>

#include "gtest/gtest.h"

namespace brickserve {
namespace {

const std::string kModelDir = std::string(BRICKSERVE_SHARED_DIR) + "/models/brick-tiny";

class RequestConvert : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!std::filesystem::exists(kModelDir + "/config.json")) return;
    EngineOptions o;
    o.model_dir = kModelDir;
    auto e = Engine::Load(o);
    ASSERT_TRUE(e.ok()) << e.status();
    engine_ = e->release();
  }
  static void TearDownTestSuite() {
    delete engine_;
    engine_ = nullptr;
  }
  void SetUp() override {
    if (engine_ == nullptr) GTEST_SKIP() << "brick-tiny not found at " << kModelDir << " (../shared next to the checkout)";
    limits_ = *ResolveLimits(v1::ServerLimits(), engine_->max_context());
  }

  static v1::GenerateRequest Text(const std::string& text) {
    v1::GenerateRequest r;
    r.set_text(text);
    return r;
  }
  // The error of converting `r`, which must fail with `code` and a message containing `part`.
  void ExpectError(const v1::GenerateRequest& r, absl::StatusCode code, const std::string& part) {
    auto out = ToEngineRequest(r, *engine_, limits_);
    ASSERT_FALSE(out.ok()) << r.ShortDebugString();
    EXPECT_EQ(out.status().code(), code) << out.status();
    EXPECT_NE(std::string(out.status().message()).find(part), std::string::npos)
        << "message \"" << out.status().message() << "\" lacks \"" << part << "\"";
  }

  static Engine* engine_;
  Limits limits_;
};
Engine* RequestConvert::engine_ = nullptr;

TEST_F(RequestConvert, ValidRequestBecomesTheEngineRequest) {
  v1::GenerateRequest r = Text("The kernel uses a");
  r.set_max_new_tokens(7);
  r.mutable_sampling()->set_temperature(0.5f);
  r.mutable_sampling()->set_top_k(40);
  r.mutable_sampling()->set_top_p(0.9f);
  r.mutable_sampling()->set_seed(11);
  r.add_stop("\n\n");
  r.add_stop_token_ids(13);
  r.set_ignore_eos(true);
  r.set_top_logprobs(3);
  r.set_skip_special_tokens(false);
  auto out = ToEngineRequest(r, *engine_, limits_);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->prompt_ids, (std::vector<int32_t>{1, 421, 603, 2152, 264}));
  EXPECT_EQ(out->max_new_tokens, 7);
  EXPECT_FLOAT_EQ(out->sampling.temperature, 0.5f);
  EXPECT_EQ(out->sampling.top_k, 40);
  EXPECT_FLOAT_EQ(out->sampling.top_p, 0.9f);
  EXPECT_EQ(out->sampling.seed, std::optional<uint64_t>(11));
  EXPECT_EQ(out->stop_strings, std::vector<std::string>{"\n\n"});
  EXPECT_EQ(out->stop_token_ids, std::vector<int32_t>{13});
  EXPECT_TRUE(out->ignore_eos);
  EXPECT_EQ(out->top_logprobs, 3);
  EXPECT_FALSE(out->skip_special_tokens);
}

TEST_F(RequestConvert, UnsetFieldsTakeTheDefaults) {
  auto out = ToEngineRequest(Text("hello"), *engine_, limits_);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->max_new_tokens, limits_.default_max_new_tokens);
  EXPECT_TRUE(out->sampling.greedy());
  EXPECT_FLOAT_EQ(out->sampling.top_p, 1.0f);
  EXPECT_FLOAT_EQ(out->sampling.repetition_penalty, 1.0f);
  EXPECT_FALSE(out->sampling.seed.has_value());
  EXPECT_TRUE(out->skip_special_tokens);
  EXPECT_EQ(out->prompt_ids.front(), 1);  // BOS added by default
  v1::GenerateRequest no_bos = Text("hello");
  no_bos.set_add_special_tokens(false);
  EXPECT_NE(ToEngineRequest(no_bos, *engine_, limits_)->prompt_ids.front(), 1);
}

TEST_F(RequestConvert, TokenIdPromptIsUsedAsGiven) {
  v1::GenerateRequest r;
  for (int id : {1, 421, 603}) r.mutable_token_ids()->add_ids(id);
  auto out = ToEngineRequest(r, *engine_, limits_);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->prompt_ids, (std::vector<int32_t>{1, 421, 603}));
}

TEST_F(RequestConvert, EmptyOrMissingPrompt) {
  ExpectError(v1::GenerateRequest(), absl::StatusCode::kInvalidArgument, "prompt: set either text or token_ids");
  ExpectError(Text(""), absl::StatusCode::kInvalidArgument, "text: the prompt is empty");
  v1::GenerateRequest ids;
  ids.mutable_token_ids();
  ExpectError(ids, absl::StatusCode::kInvalidArgument, "token_ids.ids: the prompt is empty");
}

TEST_F(RequestConvert, PromptLongerThanTheContext) {
  v1::GenerateRequest r;
  for (int i = 0; i < 600; ++i) r.mutable_token_ids()->add_ids(259);
  ExpectError(r, absl::StatusCode::kInvalidArgument, "prompt has 600 tokens; at most 511 are allowed");
  ExpectError(r, absl::StatusCode::kInvalidArgument, "context holds 512");
  limits_.max_prompt_tokens = 4;
  ExpectError(Text("The kernel uses a"), absl::StatusCode::kInvalidArgument,
              "prompt has 5 tokens; at most 4 are allowed (limits.max_prompt_tokens");
}

TEST_F(RequestConvert, PromptTokenOutsideTheVocabulary) {
  v1::GenerateRequest r;
  r.mutable_token_ids()->add_ids(1);
  r.mutable_token_ids()->add_ids(8192);
  ExpectError(r, absl::StatusCode::kInvalidArgument, "token_ids.ids[1] = 8192 is outside the vocabulary [0, 8192)");
  r.mutable_token_ids()->set_ids(1, -1);
  ExpectError(r, absl::StatusCode::kInvalidArgument, "token_ids.ids[1] = -1");
}

TEST_F(RequestConvert, MaxNewTokensOutOfRange) {
  v1::GenerateRequest r = Text("hi");
  r.set_max_new_tokens(0);
  ExpectError(r, absl::StatusCode::kInvalidArgument, "max_new_tokens = 0 is out of range: must be in [1, 512]");
  r.set_max_new_tokens(513);
  ExpectError(r, absl::StatusCode::kInvalidArgument, "max_new_tokens = 513 is out of range: must be in [1, 512]");
  limits_.max_new_tokens = 16;
  r.set_max_new_tokens(17);
  ExpectError(r, absl::StatusCode::kInvalidArgument, "max_new_tokens = 17 is out of range: must be in [1, 16]");
}

TEST_F(RequestConvert, BadSamplingValuesUseTheSharedValidation) {
  struct Case {
    std::function<void(v1::SamplingParams*)> set;
    std::string message;
  };
  const Case cases[] = {
      {[](auto* s) { s->set_temperature(-1); }, "temperature = -1 is out of range: must be in [0, 100]"},
      {[](auto* s) { s->set_temperature(101); }, "temperature = 101 is out of range"},
      {[](auto* s) { s->set_top_k(9000); }, "top_k = 9000 is out of range: must be in [0, 8192]"},
      {[](auto* s) { s->set_top_p(0); }, "top_p = 0 is out of range: must be in (0, 1]"},
      {[](auto* s) { s->set_min_p(1); }, "min_p = 1 is out of range: must be in [0, 1)"},
      {[](auto* s) { s->set_repetition_penalty(0); }, "repetition_penalty = 0 is out of range"},
      {[](auto* s) { s->set_presence_penalty(3); }, "presence_penalty = 3 is out of range: must be in [-2, 2]"},
      {[](auto* s) { s->set_frequency_penalty(-2.5); }, "frequency_penalty = -2.5 is out of range"},
  };
  for (const auto& c : cases) {
    v1::GenerateRequest r = Text("hi");
    c.set(r.mutable_sampling());
    ExpectError(r, absl::StatusCode::kInvalidArgument, c.message);
  }
}

TEST_F(RequestConvert, TopLogprobsOutOfRange) {
  v1::GenerateRequest r = Text("hi");
  r.set_top_logprobs(21);
  ExpectError(r, absl::StatusCode::kInvalidArgument, "top_logprobs = 21 is out of range: must be in [0, 20]");
  r.set_top_logprobs(-1);
  ExpectError(r, absl::StatusCode::kInvalidArgument, "top_logprobs = -1");
}

TEST_F(RequestConvert, StopStrings) {
  v1::GenerateRequest r = Text("hi");
  r.add_stop("ok");
  r.add_stop("");
  ExpectError(r, absl::StatusCode::kInvalidArgument, "stop[1] is empty");
  r.set_stop(1, "\xC3\x28");  // a lead byte without its continuation
  ExpectError(r, absl::StatusCode::kInvalidArgument, "stop[1] is not valid UTF-8");
  r.set_stop(1, "\xED\xA0\x80");  // an encoded surrogate
  ExpectError(r, absl::StatusCode::kInvalidArgument, "stop[1] is not valid UTF-8");
  r.set_stop(1, std::string(257, 'x'));
  ExpectError(r, absl::StatusCode::kInvalidArgument, "stop[1] has 257 bytes; at most 256");
  r.set_stop(1, "日本");  // valid multi-byte UTF-8
  EXPECT_TRUE(ToEngineRequest(r, *engine_, limits_).ok());
  r.clear_stop();
  for (int i = 0; i < 17; ++i) r.add_stop("s");
  ExpectError(r, absl::StatusCode::kInvalidArgument, "stop: 17 stop strings; at most 16");
}

TEST_F(RequestConvert, StopTokenOutsideTheVocabulary) {
  v1::GenerateRequest r = Text("hi");
  r.add_stop_token_ids(2);
  r.add_stop_token_ids(10000);
  ExpectError(r, absl::StatusCode::kInvalidArgument, "stop_token_ids[1] = 10000 is outside the vocabulary [0, 8192)");
}

TEST_F(RequestConvert, BricksAreNotFoundAndSparseRoutingNeedsAModuleSet) {
  v1::GenerateRequest r = Text("hi");
  r.add_bricks("x");
  ExpectError(r, absl::StatusCode::kNotFound, "brick \"x\" is not loaded");
  r.clear_bricks();
  r.mutable_router()->set_policy(v1::RouterPolicy::POLICY_TOP_K);
  r.mutable_router()->set_k(2);
  ExpectError(r, absl::StatusCode::kFailedPrecondition, "router policy top_k k=2 (router) needs a module set");
  r.mutable_router()->set_policy(v1::RouterPolicy::POLICY_DENSITY);
  r.mutable_router()->set_density(2.0f);
  ExpectError(r, absl::StatusCode::kInvalidArgument, "router.density must be in (0, 1], got 2");
  r.mutable_router()->set_density(0.5f);
  r.mutable_router()->set_selector(static_cast<v1::RouterPolicy::Selector>(42));
  ExpectError(r, absl::StatusCode::kInvalidArgument, "router.selector = 42 is not a known selector");
  r.mutable_router()->set_policy(v1::RouterPolicy::POLICY_DENSE);
  EXPECT_TRUE(ToEngineRequest(r, *engine_, limits_).ok());
}

TEST_F(RequestConvert, PriorityOutOfRange) {
  v1::GenerateRequest r = Text("hi");
  r.set_priority(1001);
  ExpectError(r, absl::StatusCode::kInvalidArgument, "priority = 1001 is out of range: must be in [-1000, 1000]");
  r.set_priority(-1000);
  EXPECT_TRUE(ToEngineRequest(r, *engine_, limits_).ok());
}

TEST_F(RequestConvert, BrickListsAndWeightsAreCheckedBeforeLookup) {
  v1::GenerateRequest r = Text("hi");
  for (int i = 0; i < 9; ++i) r.add_bricks("b" + std::to_string(i));
  ExpectError(r, absl::StatusCode::kInvalidArgument, "bricks: 9 bricks; at most 8 are allowed (limits.max_bricks_per_request)");
  r.clear_bricks();
  r.add_bricks("a");
  r.add_bricks("bad name");
  ExpectError(r, absl::StatusCode::kInvalidArgument, "bricks[1] = \"bad name\" must be 1 to 128 characters of [A-Za-z0-9._-]");
  r.set_bricks(1, "a");
  ExpectError(r, absl::StatusCode::kInvalidArgument, "bricks[1] = \"a\" repeats bricks[0]");
  r.set_bricks(1, "b");
  r.add_brick_weights(1.0f);
  ExpectError(r, absl::StatusCode::kInvalidArgument, "brick_weights has 1 weights for 2 bricks");
  r.add_brick_weights(10.5f);
  ExpectError(r, absl::StatusCode::kInvalidArgument, "brick_weights[1] = 10.5 is out of range: must be in [-10, 10]");
  r.set_brick_weights(1, std::nanf(""));
  ExpectError(r, absl::StatusCode::kInvalidArgument, "brick_weights[1] = nan is out of range");
  r.set_brick_weights(1, -2.0f);
  ExpectError(r, absl::StatusCode::kNotFound, "brick \"a\" is not loaded");
}

TEST_F(RequestConvert, ResponsesCarryTokensLogprobsAndUsage) {
  GenerationResult result;
  result.text = "abc";
  result.tokens.push_back({5, -0.5f, {{5, -0.5f}, {6, -1.5f}}});
  result.tokens.push_back({2, -0.25f, {}});
  result.finish_reason = FinishReason::kStop;
  result.matched_stop = "\n";
  result.prompt_tokens = 4;
  result.completion_tokens = 2;
  v1::GenerateResponse with;
  FillResponse(result, true, &with);
  EXPECT_EQ(with.text(), "abc");
  ASSERT_EQ(with.tokens_size(), 2);
  EXPECT_EQ(with.tokens(0).id(), 5);
  EXPECT_FLOAT_EQ(with.tokens(0).logprob(), -0.5f);
  ASSERT_EQ(with.tokens(0).top_logprobs_size(), 2);
  EXPECT_EQ(with.tokens(0).top_logprobs(1).id(), 6);
  EXPECT_EQ(with.finish_reason(), v1::FINISH_REASON_STOP);
  EXPECT_EQ(with.matched_stop(), "\n");
  EXPECT_EQ(with.usage().prompt_tokens(), 4);
  EXPECT_EQ(with.usage().completion_tokens(), 2);
  v1::GenerateResponse without;
  FillResponse(result, false, &without);
  EXPECT_FALSE(without.tokens(0).has_logprob());
  EXPECT_EQ(without.tokens(0).top_logprobs_size(), 0);
}

}  // namespace
}  // namespace brickserve
