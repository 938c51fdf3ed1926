// The sparse FFN (emergent modules) against a float64 PyTorch reference that computes only the same
// neurons: router top-k, density, the oracle (true top-k by activation mass) and the threshold
// policy, with resident neurons; density 1.0 against the dense engine; batch invariance when sparse,
// oracle, threshold and dense sequences share a step; and refusal of bad module files.
#include <fstream>

#include "absl/strings/match.h"
#include "engine/kv/block_pool.h"
#include "engine/model/llama_model.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/engine/golden_util.h"

namespace brickserve {
namespace {

using testing::RelativeError;

std::string Dir() { return std::string(BRICKSERVE_TEST_DATA_DIR) + "/modules_golden"; }

nlohmann::json Reference() {
  std::ifstream f(Dir() + "/modules_reference.json");
  return nlohmann::json::parse(f);
}

RouterPolicy PolicyOf(const nlohmann::json& c) {
  RouterPolicy p;
  const std::string policy = c["policy"];
  if (policy == "dense") return p;
  p.mode = policy == "top_k" ? RouterMode::kTopK : RouterMode::kDensity;
  const std::string sel = c["selector"];
  p.selector = sel == "oracle" ? ModuleSelector::kOracle : sel == "threshold" ? ModuleSelector::kThreshold
                                                                              : ModuleSelector::kRouter;
  if (c["k"].is_number()) p.k = c["k"];
  if (c["density"].is_number()) p.density = c["density"];
  return p;
}

class SparseFfnGolden : public ::testing::Test {
 protected:
  void SetUp() override {
    ref_ = Reference();
    base_ = Dir() + "/base";
    config_ = *LoadModelConfig(base_);
    device_ = *CreateDevice({"cpu", 2});
    auto model = LlamaModel::Load(base_, config_, device_.get(), 128);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
    auto set = ReadModuleSetFor(Dir() + "/modules.safetensors", base_, config_);
    ASSERT_TRUE(set.ok()) << set.status();
    ASSERT_TRUE(model_->SetModules(*set).ok());
    set_ = *set;
    SCOPED_TRACE(::testing::Message() << "reference seed " << ref_["seed"]);
  }

  // Logits of every position of each prompt, all in one Forward step (one sequence each).
  std::vector<std::vector<std::vector<float>>> Run(const std::vector<std::vector<int32_t>>& prompts,
                                                   const std::vector<const RouterPolicy*>& policies,
                                                   std::vector<ModuleTrace>* traces = nullptr) {
    const int bs = 4;
    KvCacheSpec spec{config_.num_layers, config_.num_kv_heads, config_.head_dim, bs, 64};
    auto cache = device_->AllocKvCache(spec);
    BlockPool pool(spec.num_blocks, bs, false);
    std::vector<std::unique_ptr<BlockTable>> tables;
    std::vector<SequenceInput> batch;
    if (traces) traces->assign(prompts.size(), {});
    for (size_t i = 0; i < prompts.size(); ++i) {
      tables.push_back(std::make_unique<BlockTable>(&pool));
      EXPECT_TRUE(tables.back()->Reserve(static_cast<int>(prompts[i].size())).ok());
      batch.push_back({prompts[i], 0, tables.back()->blocks(), LogitRows::kAll, {}, policies[i],
                       traces ? &(*traces)[i] : nullptr});
    }
    std::vector<float> logits;
    const absl::Status st = model_->Forward(batch, *cache, &logits);
    EXPECT_TRUE(st.ok()) << st;
    std::vector<std::vector<std::vector<float>>> out(prompts.size());
    if (!st.ok()) return out;
    const size_t V = config_.vocab_size;
    size_t row = 0;
    for (size_t i = 0; i < prompts.size(); ++i) {
      for (size_t t = 0; t < prompts[i].size(); ++t, ++row) {
        out[i].emplace_back(logits.begin() + row * V, logits.begin() + (row + 1) * V);
      }
    }
    return out;
  }

  nlohmann::json ref_;
  std::string base_;
  ModelConfig config_;
  std::unique_ptr<Device> device_;
  std::unique_ptr<LlamaModel> model_;
  std::shared_ptr<const ModuleSet> set_;
};

TEST_F(SparseFfnGolden, EveryPolicyMatchesTheMaskedReference) {
  const std::vector<int32_t> prompt = ref_["prompt"];
  for (const auto& c : ref_["cases"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    const RouterPolicy p = PolicyOf(c);
    ASSERT_TRUE(ValidateRouterPolicy(p, set_.get()).ok());
    const auto got = Run({prompt}, {&p})[0];
    const auto want = c["logits"].get<std::vector<std::vector<float>>>();
    ASSERT_EQ(got.size(), want.size());
    double worst = 0;
    for (size_t t = 0; t < want.size(); ++t) worst = std::max(worst, RelativeError(got[t], want[t]));
    EXPECT_LE(worst, 1e-4) << "vs the float64 reference (the policy moves logits by "
                           << c["max_abs_logit_diff_vs_dense"] << ")";
  }
}

TEST_F(SparseFfnGolden, AllModulesEqualsTheDenseEngineWithinFloatRounding) {
  const std::vector<int32_t> prompt = ref_["prompt"];
  RouterPolicy all;
  all.mode = RouterMode::kDensity;
  all.density = 1.0f;
  const auto dense = Run({prompt}, {nullptr})[0];
  const auto sparse = Run({prompt}, {&all})[0];
  for (size_t t = 0; t < dense.size(); ++t) EXPECT_LE(RelativeError(sparse[t], dense[t]), 1e-5) << "position " << t;
}

TEST_F(SparseFfnGolden, ARowGetsTheSameBitsAloneAndInAMixedBatch) {
  const std::vector<int32_t> prompt = ref_["prompt"];
  std::vector<int32_t> other(prompt.rbegin(), prompt.rend());
  RouterPolicy router{RouterMode::kTopK, ModuleSelector::kRouter, 3};
  RouterPolicy oracle{RouterMode::kTopK, ModuleSelector::kOracle, 2};
  RouterPolicy threshold{RouterMode::kDensity, ModuleSelector::kThreshold, 0, 0.5f};
  RouterPolicy random{RouterMode::kDensity, ModuleSelector::kRandom, 0, 0.5f};
  const std::vector<const RouterPolicy*> policies = {&router, nullptr, &oracle, &threshold, &random};
  const auto mixed = Run({prompt, other, prompt, other, prompt}, policies);
  for (size_t i = 0; i < policies.size(); ++i) {
    SCOPED_TRACE(policies[i] ? RouterPolicyToString(*policies[i]) : "dense");
    const auto alone = Run({i % 2 ? other : prompt}, {policies[i]})[0];
    for (size_t t = 0; t < alone.size(); ++t) ASSERT_EQ(mixed[i][t], alone[t]) << "position " << t;
  }
}

TEST_F(SparseFfnGolden, TraceCountsTheChosenModules) {
  const std::vector<int32_t> prompt = ref_["prompt"];
  RouterPolicy top3{RouterMode::kTopK, ModuleSelector::kRouter, 3};
  std::vector<ModuleTrace> traces;
  Run({prompt, prompt}, {&top3, nullptr}, &traces);
  const size_t T = prompt.size();
  for (int l = 0; l < config_.num_layers; ++l) {
    uint64_t sparse_sum = 0;
    for (int m = 0; m < set_->num_modules; ++m) {
      sparse_sum += traces[0].at(l, m);
      EXPECT_EQ(traces[1].at(l, m), T) << "a dense row uses every module";
    }
    EXPECT_EQ(sparse_sum, 3 * T) << "layer " << l;
  }
  EXPECT_EQ(traces[0].tokens, T);
  EXPECT_NEAR(traces[1].density(), 1.0, 1e-12);
  const double expected = (3.0 * set_->module_size) / set_->intermediate_size;
  EXPECT_GT(traces[0].density(), expected) << "resident neurons come on top of the modules";
  EXPECT_LT(traces[0].density(), expected + 4.0 * 3 / set_->intermediate_size);
}

TEST_F(SparseFfnGolden, BadModuleFilesAreRefusedWithTheirReason) {
  for (const auto& b : ref_["bad"]) {
    const std::string file = b["file"];
    SCOPED_TRACE(file);
    auto set = ReadModuleSetFor(Dir() + "/" + file, base_, config_);
    ASSERT_FALSE(set.ok());
    EXPECT_EQ(absl::StatusCodeToString(set.status().code()), b["expect"].get<std::string>()) << set.status();
    EXPECT_TRUE(absl::StrContains(set.status().message(), b["mentions"].get<std::string>())) << set.status();
  }
}

TEST_F(SparseFfnGolden, BadPoliciesNameTheFieldAndTheLimit) {
  struct Bad {
    RouterPolicy p;
    const char* mentions;
  };
  const std::vector<Bad> bad = {
      {{RouterMode::kDensity, ModuleSelector::kRouter, 0, 0.0f}, "router.density must be in (0, 1]"},
      {{RouterMode::kDensity, ModuleSelector::kRouter, 0, 1.5f}, "router.density must be in (0, 1]"},
      {{RouterMode::kTopK, ModuleSelector::kRouter, 0}, "router.k must be in [1, 8]"},
      {{RouterMode::kTopK, ModuleSelector::kRouter, 9}, "router.k must be in [1, 8]"},
      {{RouterMode::kTopK, ModuleSelector::kThreshold, 2}, "threshold selector takes a density"},
  };
  for (const Bad& b : bad) {
    const absl::Status st = ValidateRouterPolicy(b.p, set_.get());
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
    EXPECT_TRUE(absl::StrContains(st.message(), b.mentions)) << st;
  }
  const RouterPolicy top2{RouterMode::kTopK, ModuleSelector::kRouter, 2};
  EXPECT_EQ(ValidateRouterPolicy(top2, nullptr).code(), absl::StatusCode::kFailedPrecondition);
  // A model without a module set refuses a sparse step, and still serves dense ones afterwards.
  ASSERT_TRUE(model_->SetModules(nullptr).ok());
  const std::vector<int32_t> prompt = ref_["prompt"];
  KvCacheSpec spec{config_.num_layers, config_.num_kv_heads, config_.head_dim, 4, 16};
  auto cache = device_->AllocKvCache(spec);
  BlockPool pool(spec.num_blocks, 4, false);
  BlockTable table(&pool);
  ASSERT_TRUE(table.Reserve(static_cast<int>(prompt.size())).ok());
  SequenceInput in{prompt, 0, table.blocks(), LogitRows::kLast, {}, &top2};
  std::vector<float> logits;
  EXPECT_EQ(model_->Forward({&in, 1}, *cache, &logits).code(), absl::StatusCode::kFailedPrecondition);
  in.router = nullptr;
  EXPECT_TRUE(model_->Forward({&in, 1}, *cache, &logits).ok());
}

}  // namespace
}  // namespace brickserve
