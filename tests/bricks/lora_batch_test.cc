// One continuous batch mixing requests with adapter A, adapter B, no adapter and A+B (weighted):
// each request gets exactly the output it gets alone (the forward pass computes every row the same
// way whatever the batch holds, and a row's adapters are summed in its own order).
#include <future>

#include "bricks/brick_loader.h"
#include "engine/engine.h"
#include "lora_golden_util.h"

namespace brickserve {
namespace {

TEST(LoraBatch, MixedAdaptersInOneBatchEqualEachRequestAlone) {
  const auto g = testing::LoadLoraGolden();
  BS_SKIP_WITHOUT_LORA_GOLDEN(g);
  EngineOptions opt;
  opt.model_dir = g.base_dir("base");
  opt.device.threads = 2;
  auto engine = Engine::Load(opt);
  ASSERT_TRUE(engine.ok()) << engine.status();
  const BaseModel base{(*engine)->config(), opt.model_dir, (*engine)->device()};
  auto a = LoadBrickFromPath(g.adapter_dir("b_r16_all"), base);
  auto b = LoadBrickFromPath(g.adapter_dir("d_r64_attn_f16"), base);
  ASSERT_TRUE(a.ok() && b.ok());

  // Adapter sets: A, B, none, A+B, B+A (other order), A at weight 0.5.
  std::vector<GenerationRequest> requests;
  const std::vector<int32_t> prompt = g.cases[0].prompt_ids;
  for (int kind = 0; kind < 6; ++kind) {
    for (int variant = 0; variant < 2; ++variant) {
      GenerationRequest r;
      r.prompt_ids = prompt;
      r.prompt_ids.back() = 3 + 7 * variant + kind;  // distinct prompts
      r.max_new_tokens = 12;
      r.ignore_eos = true;
      switch (kind) {
        case 0: ASSERT_TRUE((*a)->Apply(1.0f, r).ok()); break;
        case 1: ASSERT_TRUE((*b)->Apply(1.0f, r).ok()); break;
        case 2: break;
        case 3: ASSERT_TRUE((*a)->Apply(1.0f, r).ok() && (*b)->Apply(0.7f, r).ok()); break;
        case 4: ASSERT_TRUE((*b)->Apply(0.7f, r).ok() && (*a)->Apply(1.0f, r).ok()); break;
        case 5: ASSERT_TRUE((*a)->Apply(0.5f, r).ok()); break;
      }
      requests.push_back(std::move(r));
    }
  }
  std::vector<std::vector<int32_t>> alone;
  for (const auto& r : requests) {
    auto out = (*engine)->Generate(r);
    ASSERT_TRUE(out.ok()) << out.status();
    alone.push_back(out->token_ids());
  }
  // The adapters matter: the same prompt gives different output under A, B and none.
  EXPECT_NE(alone[0], alone[4]);
  EXPECT_NE(alone[2], alone[4]);

  std::vector<std::promise<absl::StatusOr<GenerationResult>>> done(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    ASSERT_TRUE((*engine)
                    ->Submit(requests[i], {}, {},
                             [&done, i](absl::StatusOr<GenerationResult> r) { done[i].set_value(std::move(r)); })
                    .ok());
  }
  for (size_t i = 0; i < requests.size(); ++i) {
    auto out = done[i].get_future().get();
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(out->token_ids(), alone[i]) << "request " << i;
  }
}

// Adapters change the KV: a cached prompt prefix is reused only under the same adapters, weights
// and adapter version.
TEST(LoraBatch, PrefixCacheIsSharedOnlyUnderTheSameAdapters) {
  const auto g = testing::LoadLoraGolden();
  BS_SKIP_WITHOUT_LORA_GOLDEN(g);
  EngineOptions opt;
  opt.model_dir = g.base_dir("base");
  opt.kv_block_size = 16;
  auto engine = Engine::Load(opt);
  ASSERT_TRUE(engine.ok()) << engine.status();
  const BaseModel base{(*engine)->config(), opt.model_dir, (*engine)->device()};
  auto a = LoadBrickFromPath(g.adapter_dir("b_r16_all"), base);
  auto a_reloaded = LoadBrickFromPath(g.adapter_dir("b_r16_all"), base);
  ASSERT_TRUE(a.ok() && a_reloaded.ok());
  const auto cached = [&](const std::shared_ptr<Brick>* brick, float weight) {
    GenerationRequest r;
    r.prompt_ids = g.cases[0].prompt_ids;  // 24 tokens: one full 16-token block
    r.max_new_tokens = 2;
    if (brick != nullptr) EXPECT_TRUE((*brick)->Apply(weight, r).ok());
    auto out = (*engine)->Generate(r);
    EXPECT_TRUE(out.ok()) << out.status();
    return out.ok() ? out->cached_prompt_tokens : -1;
  };
  EXPECT_EQ(cached(&*a, 1.0f), 0);
  EXPECT_EQ(cached(&*a, 1.0f), 16);        // same adapter: reused
  EXPECT_EQ(cached(nullptr, 1.0f), 0);     // base model: not the adapter's KV
  EXPECT_EQ(cached(nullptr, 1.0f), 16);
  EXPECT_EQ(cached(&*a, 0.5f), 0);         // other weight
  EXPECT_EQ(cached(&*a_reloaded, 1.0f), 0);  // other load of the same files: a new version
}

}  // namespace
}  // namespace brickserve
