// LoRA bricks against the float64 PyTorch reference: engine logits with adapters applied unmerged
// equal the logits of the merged model W + Σ weight·s·B·A, for random PEFT adapters of several ranks,
// target sets, alpha, rsLoRA and storage types, alone and combined; bad adapters are refused with
// the status and the words the reference script expects.
#include <algorithm>
#include <map>

#include "absl/strings/match.h"
#include "bricks/brick_loader.h"
#include "engine/kv/block_pool.h"
#include "engine/model/llama_model.h"
#include "lora_golden_util.h"
#include "tests/engine/golden_util.h"

namespace brickserve {
namespace {

using testing::LoadLoraGolden;
using testing::RelativeError;

struct Loaded {
  ModelConfig config;
  std::unique_ptr<Device> device;
  std::unique_ptr<LlamaModel> model;
};

Loaded LoadBase(const std::string& dir, int max_batch_tokens) {
  Loaded l;
  auto config = LoadModelConfig(dir);
  EXPECT_TRUE(config.ok()) << config.status();
  l.config = *config;
  l.device = *CreateDevice({"cpu", 2});
  auto model = LlamaModel::Load(dir, l.config, l.device.get(), max_batch_tokens);
  EXPECT_TRUE(model.ok()) << model.status();
  l.model = *std::move(model);
  return l;
}

// Every prompt position's logits, prefilled in chunks of the model's max_batch_tokens.
std::vector<std::vector<float>> PromptLogits(Loaded& l, const std::vector<int32_t>& prompt,
                                             std::span<const LoraUse> loras) {
  const int bs = 4, n = static_cast<int>(prompt.size());
  KvCacheSpec spec{l.config.num_layers, l.config.num_kv_heads, l.config.head_dim, bs, n / bs + 2};
  auto cache = l.device->AllocKvCache(spec);
  BlockPool pool(spec.num_blocks, bs, /*prefix_cache=*/false);
  BlockTable table(&pool);
  EXPECT_TRUE(table.Reserve(n).ok());
  const size_t V = l.config.vocab_size;
  std::vector<std::vector<float>> out;
  std::vector<float> logits;
  const int chunk = l.model->max_batch_tokens();
  for (int off = 0; off < n; off += chunk) {
    const int m = std::min(chunk, n - off);
    SequenceInput in{std::span<const int32_t>(prompt).subspan(off, m), off, table.blocks(), LogitRows::kAll, loras};
    const absl::Status st = l.model->Forward({&in, 1}, *cache, &logits);
    EXPECT_TRUE(st.ok()) << st;
    if (!st.ok()) return out;
    for (int i = 0; i < m; ++i) out.emplace_back(logits.begin() + i * V, logits.begin() + (i + 1) * V);
  }
  return out;
}

void CheckCases(int max_batch_tokens) {
  const auto g = LoadLoraGolden();
  BS_SKIP_WITHOUT_LORA_GOLDEN(g);
  std::map<std::string, Loaded> bases;
  for (const auto& c : g.cases) {
    SCOPED_TRACE(c.name);
    auto it = bases.find(c.base);
    if (it == bases.end()) it = bases.emplace(c.base, LoadBase(g.base_dir(c.base), max_batch_tokens)).first;
    Loaded& l = it->second;
    const BaseModel base{l.config, g.base_dir(c.base), l.device.get()};
    GenerationRequest req;
    for (const auto& a : c.adapters) {
      auto brick = LoadBrickFromPath(g.adapter_dir(a.name), base);
      ASSERT_TRUE(brick.ok()) << brick.status();
      ASSERT_TRUE((*brick)->Apply(a.weight, req).ok());
    }
    const auto got = PromptLogits(l, c.prompt_ids, req.loras);
    const auto plain = PromptLogits(l, c.prompt_ids, {});
    ASSERT_EQ(got.size(), c.prompt_logits.size());
    double worst = 0, adapter_effect = 0;
    for (size_t p = 0; p < got.size(); ++p) {
      worst = std::max(worst, RelativeError(got[p], c.prompt_logits[p]));
      adapter_effect = std::max(adapter_effect, RelativeError(plain[p], c.prompt_logits[p]));
    }
    // F32 accumulation against float64 on the very stored values (16-bit ones widen exactly).
    EXPECT_LE(worst, 1e-4);
    // The test can fail: without the adapter the logits are far off.
    EXPECT_GE(adapter_effect, 1e-2);
  }
}

TEST(LoraGolden, UnmergedAdaptersMatchMergedReference) { CheckCases(/*max_batch_tokens=*/64); }

// Prefill chunks of 5 rows and single rows take the same path per row.
TEST(LoraGolden, ChunkedPrefillMatchesMergedReference) { CheckCases(/*max_batch_tokens=*/5); }

TEST(LoraGolden, BadAdaptersAreRefusedWithTheirReason) {
  const auto g = LoadLoraGolden();
  BS_SKIP_WITHOUT_LORA_GOLDEN(g);
  ASSERT_FALSE(g.bad.empty());
  std::map<std::string, Loaded> bases;
  for (const auto& b : g.bad) {
    SCOPED_TRACE(b.name);
    auto it = bases.find(b.base);
    if (it == bases.end()) it = bases.emplace(b.base, LoadBase(g.base_dir(b.base), 64)).first;
    const BaseModel base{it->second.config, g.base_dir(b.base), it->second.device.get()};
    auto brick = LoadBrickFromPath(g.adapter_dir(b.name), base);
    ASSERT_FALSE(brick.ok());
    EXPECT_EQ(absl::StatusCodeToString(brick.status().code()), b.expect) << brick.status();
    EXPECT_TRUE(absl::StrContains(brick.status().message(), b.mentions)) << brick.status();
  }
}

}  // namespace
}  // namespace brickserve
