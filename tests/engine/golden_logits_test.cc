// The forward pass against the float64 PyTorch reference: prefill logits at every prompt position
// and the logits of each step of a 32-token greedy decode (teacher-forced on the reference tokens).
#include <algorithm>

#include "engine/kv/block_pool.h"
#include "engine/model/llama_model.h"
#include "golden_util.h"

namespace brickserve {
namespace {

using testing::GoldenCaseNames;
using testing::LoadGoldenCase;
using testing::RelativeError;

class GoldenLogits : public ::testing::TestWithParam<int> {};

void CheckCase(const std::string& name, int max_batch_tokens, int block_size) {
  const auto c = LoadGoldenCase(name);
  auto config = LoadModelConfig(c.dir);
  ASSERT_TRUE(config.ok()) << config.status();
  auto device = CreateDevice({"cpu", 2});
  ASSERT_TRUE(device.ok()) << device.status();
  auto model = LlamaModel::Load(c.dir, *config, device->get(), max_batch_tokens);
  ASSERT_TRUE(model.ok()) << model.status();
  const int total = static_cast<int>(c.prompt_ids.size() + c.greedy_ids.size());
  KvCacheSpec spec{config->num_layers, config->num_kv_heads, config->head_dim, block_size,
                   (total + block_size - 1) / block_size + 1};
  auto cache = (*device)->AllocKvCache(spec);
  ASSERT_TRUE(cache.ok());
  BlockPool alloc(spec.num_blocks, block_size, /*prefix_cache=*/false);
  BlockTable table(&alloc);
  ASSERT_TRUE(table.Reserve(total).ok());
  const double tol = testing::Tolerance(c.dtype);
  const size_t V = config->vocab_size;

  // Prefill in chunks of max_batch_tokens, every position's logits.
  std::vector<float> logits;
  const std::span<const int32_t> prompt(c.prompt_ids);
  for (size_t off = 0; off < prompt.size(); off += max_batch_tokens) {
    const size_t n = std::min<size_t>(max_batch_tokens, prompt.size() - off);
    SequenceInput in{prompt.subspan(off, n), static_cast<int32_t>(off), table.blocks(), LogitRows::kAll};
    ASSERT_TRUE((*model)->Forward({&in, 1}, *cache, &logits).ok());
    for (size_t i = 0; i < n; ++i) {
      const double err = RelativeError({logits.data() + i * V, V}, c.prompt_logits[off + i]);
      EXPECT_LE(err, tol) << name << " prompt position " << off + i;
    }
  }
  EXPECT_LE(RelativeError({logits.data() + (logits.size() - V), V}, c.step_logits[0]), tol) << name << " step 0";
  // Decode, feeding the reference's greedy tokens; the engine's argmax must agree at every step.
  int pos = static_cast<int>(prompt.size());
  for (size_t step = 0; step < c.greedy_ids.size(); ++step) {
    const std::span<const float> row(logits.data() + (logits.size() - V), V);
    const int32_t argmax = static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
    EXPECT_EQ(argmax, c.greedy_ids[step]) << name << " greedy step " << step;
    EXPECT_LE(RelativeError(row, c.step_logits[step]), tol) << name << " step " << step;
    if (step + 1 == c.greedy_ids.size()) break;
    SequenceInput in{std::span<const int32_t>(&c.greedy_ids[step], 1), pos++, table.blocks(), LogitRows::kLast};
    ASSERT_TRUE((*model)->Forward({&in, 1}, *cache, &logits).ok());
  }
}

TEST(GoldenLogits, EveryCaseMatchesReference) {
  BS_SKIP_WITHOUT_GOLDEN();
  for (const auto& name : GoldenCaseNames()) {
    SCOPED_TRACE(name);
    CheckCase(name, /*max_batch_tokens=*/64, /*block_size=*/16);
  }
}

// Chunked prefill (chunks of 5 across block boundaries of 4) gives the same logits.
TEST(GoldenLogits, ChunkedPrefillAndSmallBlocksMatchReference) {
  BS_SKIP_WITHOUT_GOLDEN();
  for (const auto& name : GoldenCaseNames()) {
    SCOPED_TRACE(name);
    CheckCase(name, /*max_batch_tokens=*/5, /*block_size=*/4);
  }
}

}  // namespace
}  // namespace brickserve
