// Device conformance, whole model: on every golden checkpoint (F32, BF16, F16; the ctest fixture
// golden), prefill logits and a 16-step greedy decode on the device under test against the CPU
// reference; concurrent requests through the engine's scheduler against each request alone on the
// device under test; and, when bricks are built, a batch mixing LoRA adapters (fixture lora_golden).
#include <algorithm>
#include <future>
#include <numeric>

#include "device_conformance_util.h"
#include "engine/engine.h"
#include "engine/model/llama_model.h"
#include "golden_util.h"
#ifdef BRICKSERVE_CONFORMANCE_LORA
#include "../bricks/lora_golden_util.h"
#include "bricks/brick_loader.h"
#endif

namespace brickserve::conformance {
namespace {

using ::brickserve::testing::GoldenCase;
using ::brickserve::testing::GoldenCaseNames;
using ::brickserve::testing::LoadGoldenCase;

constexpr int kDecodeSteps = 16;

class ModelConformance : public DeviceConformance {
 protected:
  void SetUp() override {
    DeviceConformance::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    BS_SKIP_WITHOUT_GOLDEN();
  }
};

double MaxAbs(std::span<const float> v) {
  double m = 0;
  for (float x : v) m = std::max(m, static_cast<double>(std::fabs(x)));
  return m;
}

int32_t Argmax(std::span<const float> v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

// Largest minus second-largest value.
double Top2Gap(std::span<const float> v) {
  std::vector<float> s(v.begin(), v.end());
  std::partial_sort(s.begin(), s.begin() + 2, s.end(), std::greater<>());
  return static_cast<double>(s[0]) - s[1];
}

// One model on one device, with its own cache and a shuffled (non-contiguous) block table.
struct ModelOnDevice {
  std::unique_ptr<LlamaModel> model;
  KvCache cache;
  std::vector<int32_t> blocks;

  static absl::StatusOr<ModelOnDevice> Load(Device& d, const std::string& dir, const ModelConfig& config, int tokens,
                                            std::mt19937& rng) {
    ModelOnDevice m;
    auto model = LlamaModel::Load(dir, config, &d, /*max_batch_tokens=*/64);
    if (!model.ok()) return model.status();
    m.model = *std::move(model);
    const int block_size = 16, need = (tokens + block_size - 1) / block_size;
    KvCacheSpec spec{config.num_layers, config.num_kv_heads, config.head_dim, block_size, need + 4};
    auto cache = d.AllocKvCache(spec);
    if (!cache.ok()) return cache.status();
    m.cache = *std::move(cache);
    m.blocks.resize(spec.num_blocks);
    std::iota(m.blocks.begin(), m.blocks.end(), 0);
    std::shuffle(m.blocks.begin(), m.blocks.end(), rng);
    m.blocks.resize(need);
    return m;
  }
  // Runs `tokens` from position `pos`; logits of every row (kAll) or of the last (kLast).
  absl::Status Run(std::span<const int32_t> tokens, int pos, LogitRows rows, std::vector<float>* logits) {
    SequenceInput in;
    in.tokens = tokens;
    in.start_pos = pos;
    in.block_table = blocks;
    in.logits = rows;
    return model->Forward({&in, 1}, cache, logits);
  }
};

// Prefill logits at every prompt position, then greedy decode with each device feeding back its own
// argmax: logits within the weight type's tolerance while the paths agree; the tokens must agree
// for F32. For BF16/F16 they may part once, where the reference's top-2 gap is within twice the
// tolerance (each of the two logits may move by it), and nothing after that is compared.
TEST_F(ModelConformance, GoldenPrefillLogitsAndGreedyDecodeMatchReference) {
  for (const std::string& name : GoldenCaseNames()) {
    SCOPED_TRACE(name);
    const GoldenCase c = LoadGoldenCase(name);
    auto config = LoadModelConfig(c.dir);
    ASSERT_TRUE(config.ok()) << config.status();
    const Tolerance tol = WeightTolerance(c.dtype);
    const int V = config->vocab_size, prompt_len = static_cast<int>(c.prompt_ids.size());
    Pair<ModelOnDevice> m;
    for (int side = 0; side < kSides; ++side) {
      CONF_ASSIGN_OR_FAIL(m[side], ModelOnDevice::Load(device(side), c.dir, *config, prompt_len + kDecodeSteps, rng_));
    }
    // The DUT prefills in chunks of 24 (a later chunk attends to cached tokens), the reference in one.
    Pair<std::vector<float>> prefill;
    for (int side = 0; side < kSides; ++side) {
      const int chunk = side == 0 ? 24 : prompt_len;
      std::vector<float> logits;
      for (int off = 0; off < prompt_len; off += chunk) {
        const int n = std::min(chunk, prompt_len - off);
        CONF_ASSERT_OK(m[side].Run(std::span(c.prompt_ids).subspan(off, n), off, LogitRows::kAll, &logits));
        prefill[side].insert(prefill[side].end(), logits.begin(), logits.end());
      }
      ASSERT_EQ(prefill[side].size(), static_cast<size_t>(prompt_len) * V);
    }
    ExpectRowsClose(prefill[0], prefill[1], prompt_len, V, tol, "prefill logits");

    Pair<std::vector<float>> last;
    for (int side = 0; side < kSides; ++side) last[side].assign(prefill[side].end() - V, prefill[side].end());
    for (int step = 0; step < kDecodeSteps; ++step) {
      ExpectRowsClose(last[0], last[1], 1, V, tol, absl::StrCat("decode step ", step, " logits"));
      const int32_t dut_token = Argmax(last[0]), ref_token = Argmax(last[1]);
      if (dut_token != ref_token) {
        const double gap = Top2Gap(last[1]), near_tie = 2 * tol.Bound(MaxAbs(last[1]));
        EXPECT_NE(c.dtype, "F32") << "greedy token differs at step " << step << ": " << dut_token << " vs " << ref_token
                                  << " (reference top-2 gap " << gap << ")";
        EXPECT_LE(gap, near_tie) << "greedy token differs at step " << step << ": " << dut_token << " vs " << ref_token
                                 << " where the reference's top-2 gap " << gap << " exceeds " << near_tie;
        break;
      }
      const int pos = prompt_len + step;
      for (int side = 0; side < kSides; ++side) {
        CONF_ASSERT_OK(m[side].Run({&ref_token, 1}, pos, LogitRows::kLast, &last[side]));
      }
    }
  }
}

// `got` against `want`, token by token. Exact: the same ids and bit-identical logprobs. Otherwise
// logprobs within `near_tie` (twice the logit tolerance bounds a log-softmax's move) and the same
// ids, except that they may part once where `want`'s top-2 gap is within near_tie, got taking
// want's runner-up; nothing after that is compared. Needs top_logprobs >= 2.
void ExpectSameGeneration(const GenerationResult& got, const GenerationResult& want, bool exact, double near_tie,
                          const std::string& what) {
  ASSERT_EQ(got.tokens.size(), want.tokens.size()) << what;
  for (size_t i = 0; i < want.tokens.size(); ++i) {
    const GeneratedToken &g = got.tokens[i], &w = want.tokens[i];
    ASSERT_GE(w.top.size(), 2u) << what;
    if (g.id != w.id) {
      const double gap = w.top[0].logprob - w.top[1].logprob;
      EXPECT_FALSE(exact) << what << ": token " << i << " is " << g.id << ", want " << w.id << " (top-2 gap " << gap
                          << ")";
      EXPECT_LE(gap, near_tie) << what << ": token " << i << " is " << g.id << ", want " << w.id;
      EXPECT_EQ(g.id, w.top[1].id) << what << ": token " << i << " is neither the first nor the second choice";
      return;
    }
    if (exact) {
      EXPECT_TRUE(SameBits(g.logprob, w.logprob))
          << what << ": token " << i << " logprob " << g.logprob << " vs " << w.logprob;
    } else {
      EXPECT_NEAR(g.logprob, w.logprob, near_tie) << what << ": token " << i;
    }
  }
}

// Submits every request at once (the scheduler batches them) and waits for all results.
std::vector<absl::StatusOr<GenerationResult>> RunConcurrently(Engine& engine,
                                                              const std::vector<GenerationRequest>& rs) {
  std::vector<std::promise<absl::StatusOr<GenerationResult>>> done(rs.size());
  for (size_t i = 0; i < rs.size(); ++i) {
    auto id = engine.Submit(rs[i], {}, {},
                            [&done, i](absl::StatusOr<GenerationResult> r) { done[i].set_value(std::move(r)); });
    if (!id.ok()) done[i].set_value(id.status());
  }
  std::vector<absl::StatusOr<GenerationResult>> out;
  for (auto& d : done) out.push_back(d.get_future().get());
  return out;
}

EngineOptions SmallBatchOptions(const std::string& dir, const DeviceOptions& device) {
  EngineOptions o;
  o.model_dir = dir;
  o.device = device;
  o.max_batch_tokens = 32;  // long prompts take several steps, mixed with other requests' decode rows
  o.kv_block_size = 16;
  o.prefix_cache = false;    // every request computes its own KV
  o.kv_cache_tokens = 1024;  // room for all requests at once: batching, not preemption, is under test
  return o;
}

GenerationRequest Greedy(std::vector<int32_t> prompt) {
  GenerationRequest r;
  r.prompt_ids = std::move(prompt);
  r.max_new_tokens = kDecodeSteps;
  r.ignore_eos = true;
  r.top_logprobs = 2;
  return r;
}

// The engine on the DUT: several requests at once give what each gives alone. Bit-identical on a
// batch-invariant device; without invariance (cpu-gemm) within tolerance, parting only at near-ties.
TEST_F(ModelConformance, ConcurrentRequestsEqualEachAloneOnTheDeviceUnderTest) {
  for (const std::string& name : GoldenCaseNames()) {
    SCOPED_TRACE(name);
    const GoldenCase c = LoadGoldenCase(name);
    auto engine = Engine::Load(SmallBatchOptions(c.dir, choice_.options));
    ASSERT_TRUE(engine.ok()) << engine.status();
    const int vocab = (*engine)->config().vocab_size;
    std::vector<GenerationRequest> requests = {Greedy(c.prompt_ids)};
    for (int len : {1, 7, 33, 60}) {
      std::vector<int32_t> prompt = {1};
      while (static_cast<int>(prompt.size()) < len) prompt.push_back(RandomInt(rng_, 3, vocab - 1));
      requests.push_back(Greedy(std::move(prompt)));
    }
    std::vector<GenerationResult> alone;
    for (const auto& r : requests) {
      auto out = (*engine)->Generate(r);
      ASSERT_TRUE(out.ok()) << out.status();
      alone.push_back(*std::move(out));
    }
    const auto batched = RunConcurrently(**engine, requests);
    const bool exact = choice_.options.batch_invariant;
    double scale = 0;
    for (const auto& row : c.prompt_logits) scale = std::max(scale, MaxAbs(row));
    const double near_tie = 2 * WeightTolerance(c.dtype).Bound(scale);
    for (size_t i = 0; i < requests.size(); ++i) {
      ASSERT_TRUE(batched[i].ok()) << batched[i].status();
      ExpectSameGeneration(
          *batched[i], alone[i], exact, near_tie,
          absl::StrCat("request ", i, " (", requests[i].prompt_ids.size(), " prompt tokens) batched vs alone"));
    }
  }
}

// Requests without logprobs: a GPU samples on the device (Device::SampleTokens) and only ids come
// back. Sampled requests (seeded; penalties, top-k, top-p, min-p) batched give what each gives alone
// (bit-identical on a batch-invariant device), and greedy ones give the reference's tokens, parting
// only where the reference's top-2 gap is a near-tie.
TEST_F(ModelConformance, RequestsSampledWithoutLogprobsMatchAloneAndGreedyMatchesReference) {
  for (const std::string& name : GoldenCaseNames()) {
    SCOPED_TRACE(name);
    const GoldenCase c = LoadGoldenCase(name);
    auto engine = Engine::Load(SmallBatchOptions(c.dir, choice_.options));
    ASSERT_TRUE(engine.ok()) << engine.status();
    auto reference = Engine::Load(SmallBatchOptions(c.dir, ReferenceOptions()));
    ASSERT_TRUE(reference.ok()) << reference.status();
    std::vector<GenerationRequest> requests;
    for (int i = 0; i < 5; ++i) {
      GenerationRequest r = Greedy(c.prompt_ids);
      r.top_logprobs = 0;
      r.sampling.temperature = 0.7f + 0.2f * i;
      r.sampling.top_k = i == 1 ? 0 : 5 + 7 * i;
      r.sampling.top_p = i == 2 ? 1.0f : 0.95f;
      r.sampling.min_p = i == 3 ? 0.05f : 0.0f;
      r.sampling.repetition_penalty = i == 4 ? 1.3f : 1.0f;
      r.sampling.frequency_penalty = i == 4 ? 0.5f : 0.0f;
      r.sampling.seed = 1000 + i;
      requests.push_back(std::move(r));
    }
    GenerationRequest greedy = Greedy(c.prompt_ids);
    greedy.top_logprobs = 0;
    requests.push_back(greedy);
    std::vector<GenerationResult> alone;
    for (const auto& r : requests) {
      auto out = (*engine)->Generate(r);
      ASSERT_TRUE(out.ok()) << out.status();
      ASSERT_EQ(out->tokens.size(), static_cast<size_t>(kDecodeSteps));
      alone.push_back(*std::move(out));
    }
    const auto batched = RunConcurrently(**engine, requests);
    for (size_t i = 0; i < requests.size(); ++i) {
      ASSERT_TRUE(batched[i].ok()) << batched[i].status();
      ASSERT_EQ(batched[i]->tokens.size(), alone[i].tokens.size());
      if (!choice_.options.batch_invariant) continue;  // no promise across batch shapes
      for (size_t t = 0; t < alone[i].tokens.size(); ++t) {
        ASSERT_EQ(batched[i]->tokens[t].id, alone[i].tokens[t].id) << "request " << i << " token " << t;
      }
    }
    // Greedy without logprobs against the reference's greedy with them (for the near-tie check).
    auto want = (*reference)->Generate(Greedy(c.prompt_ids));
    ASSERT_TRUE(want.ok()) << want.status();
    double scale = 0;
    for (const auto& row : c.prompt_logits) scale = std::max(scale, MaxAbs(row));
    const double near_tie = 2 * WeightTolerance(c.dtype).Bound(scale);
    const GenerationResult& got = alone.back();
    for (size_t t = 0; t < want->tokens.size(); ++t) {
      const GeneratedToken& w = want->tokens[t];
      if (got.tokens[t].id == w.id) continue;
      const double gap = w.top[0].logprob - w.top[1].logprob;
      EXPECT_LE(gap, near_tie) << "greedy token " << t << " is " << got.tokens[t].id << ", reference " << w.id;
      break;  // the two decodes part here: what follows depends on different contexts
    }
  }
}

#ifdef BRICKSERVE_CONFORMANCE_LORA
// One batch mixing adapters (F32, BF16, F16; one, none, several with weights) on the DUT: each request
// as it is alone, and alone as on the reference (within the least precise adapter's tolerance).
TEST_F(ModelConformance, LoraMixedBatchMatchesAloneAndReference) {
  const auto g = ::brickserve::testing::LoadLoraGolden();
  BS_SKIP_WITHOUT_LORA_GOLDEN(g);
  const char* kAdapters[] = {"b_r16_all", "c_r4_rslora_mlp", "d_r64_attn_f16"};  // F32, BF16, F16
  // Per request: (adapter index, weight) in order.
  const std::vector<std::vector<std::pair<int, float>>> mixes = {
      {{0, 1.0f}}, {{1, 1.0f}}, {}, {{0, 1.0f}, {1, 1.5f}}, {{2, -0.4f}}, {{1, 0.5f}, {0, 1.0f}, {2, 0.7f}}};
  Pair<std::vector<GenerationResult>> alone;
  std::vector<absl::StatusOr<GenerationResult>> batched;
  for (int side = 0; side < kSides; ++side) {
    const EngineOptions o = SmallBatchOptions(g.base_dir("base"), side == 0 ? choice_.options : ReferenceOptions());
    auto engine = Engine::Load(o);
    ASSERT_TRUE(engine.ok()) << engine.status();
    const BaseModel base{(*engine)->config(), o.model_dir, (*engine)->device()};
    std::vector<std::shared_ptr<Brick>> bricks;
    for (const char* a : kAdapters) {
      auto brick = LoadBrickFromPath(g.adapter_dir(a), base);
      ASSERT_TRUE(brick.ok()) << a << ": " << brick.status();
      bricks.push_back(*std::move(brick));
    }
    std::vector<GenerationRequest> requests;
    for (size_t i = 0; i < mixes.size(); ++i) {
      std::vector<int32_t> prompt = g.cases[0].prompt_ids;
      prompt.back() = 3 + static_cast<int32_t>(i);  // distinct prompts
      requests.push_back(Greedy(std::move(prompt)));
      for (auto [a, w] : mixes[i]) CONF_ASSERT_OK(bricks[a]->Apply(w, requests.back()));
    }
    for (const auto& r : requests) {
      auto out = (*engine)->Generate(r);
      ASSERT_TRUE(out.ok()) << out.status();
      alone[side].push_back(*std::move(out));
    }
    if (side == 0) batched = RunConcurrently(**engine, requests);
  }
  double scale = 0;
  for (const auto& row : g.cases[0].prompt_logits) scale = std::max(scale, MaxAbs(row));
  for (size_t i = 0; i < mixes.size(); ++i) {
    bool half = false;  // any 16-bit adapter
    for (auto [a, w] : mixes[i]) half |= a != 0;
    const double near_tie = 2 * WeightTolerance(half ? DType::kBF16 : DType::kF32).Bound(scale);
    ASSERT_TRUE(batched[i].ok()) << batched[i].status();
    ExpectSameGeneration(*batched[i], alone[0][i], choice_.options.batch_invariant, near_tie,
                         absl::StrCat("LoRA request ", i, " batched vs alone"));
    ExpectSameGeneration(alone[0][i], alone[1][i], /*exact=*/false, near_tie,
                         absl::StrCat("LoRA request ", i, " on the device under test vs the reference"));
  }
}
#endif

}  // namespace
}  // namespace brickserve::conformance
