// `brickserve modules eval|stats` building blocks: perplexity exactly like brick-tiny's float64
// reference, module traces and disabled-module masks on the golden module set, the partition
// experiment's top-module sets and overlaps, and the module-usage report.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>

#include "engine/cli/module_usage_report.h"
#include "engine/cli/perplexity.h"
#include "engine/engine.h"
#include "engine/modules/module_set.h"
#include "engine/util/read_file.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace brickserve {
namespace {

const std::string kBrickTiny = std::string(BRICKSERVE_SHARED_DIR) + "/models/brick-tiny";
const std::string kModulesGolden = std::string(BRICKSERVE_TEST_DATA_DIR) + "/modules_golden";

// --- no model ------------------------------------------------------------------------------------

TEST(EvalChunks, PrefixesBosAndStopsAtTheChunkCount) {
  std::vector<int32_t> ids(10);
  for (int i = 0; i < 10; ++i) ids[i] = 100 + i;
  TokenChunks c = MakeEvalChunks(ids, 1, 2, 4);
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0], (std::vector<int32_t>{1, 100, 101, 102, 103}));
  EXPECT_EQ(c[1], (std::vector<int32_t>{1, 104, 105, 106, 107}));
  c = MakeEvalChunks(ids, 1, 0, 4);  // all: a short last chunk is kept
  ASSERT_EQ(c.size(), 3u);
  EXPECT_EQ(c[2], (std::vector<int32_t>{1, 108, 109}));
  c = MakeEvalChunks(ids, std::nullopt, 0, 3);  // without BOS a 1-token tail has nothing to score
  ASSERT_EQ(c.size(), 3u);
  EXPECT_EQ(c[2], (std::vector<int32_t>{106, 107, 108}));
  EXPECT_TRUE(MakeEvalChunks({}, 1, 8, 255).empty());
}

ModuleTrace TraceOf(int layers, int modules, const std::vector<uint64_t>& counts, uint64_t tokens) {
  ModuleTrace t;
  t.Reset(layers, modules);
  t.counts = counts;
  t.tokens = tokens;
  return t;
}

TEST(Partition, TopModulesAreTheMostUsedWithTiesToTheLowerId) {
  // 2 layers x 5 modules; top fraction 0.4 -> 2 per layer.
  const ModuleTrace t = TraceOf(2, 5, {1, 9, 9, 3, 9, /**/ 0, 0, 0, 0, 0}, 10);
  EXPECT_EQ(TopModuleCount(5, 0.4), 2);
  EXPECT_EQ(TopModuleCount(5, 0.01), 1);
  EXPECT_EQ(TopModuleCount(5, 1.0), 5);
  const std::vector<uint8_t> mask = TopModuleMask(t, 0.4);
  EXPECT_EQ(mask, (std::vector<uint8_t>{0, 1, 1, 0, 0, /**/ 1, 1, 0, 0, 0}));
}

TEST(Partition, MeanJaccardAveragesOverLayers) {
  const std::vector<uint8_t> a = {1, 1, 0, 0, /**/ 1, 1, 0, 0};
  const std::vector<uint8_t> b = {1, 0, 1, 0, /**/ 1, 1, 0, 0};
  EXPECT_DOUBLE_EQ(MeanJaccard(a, a, 2, 4), 1.0);
  EXPECT_DOUBLE_EQ(MeanJaccard(a, b, 2, 4), (1.0 / 3.0 + 1.0) / 2.0);
  const std::vector<uint8_t> r = RandomModuleMask(3, 10, 4, 7);
  for (int l = 0; l < 3; ++l) {
    int n = 0;
    for (int m = 0; m < 10; ++m) n += r[l * 10 + m];
    EXPECT_EQ(n, 4) << "layer " << l;
  }
  EXPECT_EQ(r, RandomModuleMask(3, 10, 4, 7));
}

TEST(ModuleUsageReport, SummarisesSharesAndNeverUsedModules) {
  const ModuleTrace t = TraceOf(1, 4, {10, 0, 5, 2}, 10);
  const LayerUsage u = SummarizeLayerUsage(t, 0, 2);
  EXPECT_DOUBLE_EQ(u.max_share, 1.0);
  EXPECT_DOUBLE_EQ(u.min_share, 0.0);
  EXPECT_DOUBLE_EQ(u.median_share, 0.35);
  EXPECT_EQ(u.most_used, (std::vector<int>{0, 2}));
  EXPECT_EQ(u.least_used, (std::vector<int>{1, 3}));
  EXPECT_EQ(u.never_used, (std::vector<int>{1}));
  EXPECT_EQ(ShareSparkline(u.shares, 1.0), "█ ▄▂");
  const std::string report = FormatModuleUsageReport(t, {.title = "T"});
  EXPECT_NE(report.find("never used: 1 [1]"), std::string::npos) << report;
  EXPECT_NE(report.find("pruning candidates (modules no token used): 1 of 4"), std::string::npos) << report;
  EXPECT_NE(FormatModuleUsageReport(ModuleTrace{}).find("no module usage"), std::string::npos);
}

// --- brick-tiny: perplexity against the float64 reference -----------------------------------------

TEST(BrickTinyPerplexity, DenseMatchesTheReference) {
  if (!std::filesystem::exists(kBrickTiny + "/eval/prose.txt")) {
    GTEST_SKIP() << "brick-tiny not found at " << kBrickTiny << " (it lives in ../shared next to the checkout); skipping";
  }
  EngineOptions o;
  o.model_dir = kBrickTiny;
  auto engine = Engine::Load(o);
  ASSERT_TRUE(engine.ok()) << engine.status();
  const std::pair<const char*, double> kReference[] = {
      {"prose", 75.89}, {"code", 37.91}, {"zh", 64.41}, {"math", 5.40}};
  for (const auto& [domain, want] : kReference) {
    auto text = ReadFileToString(kBrickTiny + "/eval/" + domain + ".txt");
    ASSERT_TRUE(text.ok()) << text.status();
    auto chunks = TokenizeEvalChunks(**engine, *text, 8, 255);
    ASSERT_TRUE(chunks.ok()) << chunks.status();
    ASSERT_EQ(chunks->size(), 8u) << domain;
    for (const auto& c : *chunks) {
      ASSERT_EQ(c.size(), 256u);
      EXPECT_EQ(c[0], *(*engine)->info().bos_id);
    }
    auto ppl = Perplexity(**engine, *chunks);
    ASSERT_TRUE(ppl.ok()) << ppl.status();
    EXPECT_EQ(ppl->tokens, 8 * 255);
    // 0.1% relative to the (2-decimal) reference values.
    EXPECT_NEAR(ppl->ppl, want, want * 1e-3) << domain;
  }
}

// --- the golden module set ------------------------------------------------------------------------

class GoldenModules : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!std::filesystem::exists(kModulesGolden + "/modules_reference.json")) return;
    EngineOptions o;
    o.model_dir = kModulesGolden + "/base";
    o.modules_path = kModulesGolden + "/modules.safetensors";
    auto e = Engine::Load(o);
    ASSERT_TRUE(e.ok()) << e.status();
    engine_ = e->release();
    std::ifstream in(kModulesGolden + "/modules_reference.json");
    const auto ref = nlohmann::json::parse(in);
    prompt_ = {ref["prompt"].get<std::vector<int32_t>>()};
    prompt_ppl_ = ref["prompt_ppl"].get<double>();
    layer_off_prompt_ppl_ = ref["layer_off_prompt_ppl"].get<std::vector<double>>();
    // Two "domains" of random tokens, in chunks of 12 after BOS.
    std::mt19937 gen(ref["seed"].get<uint64_t>() & 0xffffffffu);
    std::uniform_int_distribution<int32_t> token(3, engine_->config().vocab_size - 1);
    for (int d = 0; d < 2; ++d) {
      std::vector<int32_t> ids(36);
      for (auto& id : ids) id = token(gen);
      domains_.push_back({d == 0 ? "a" : "b", MakeEvalChunks(ids, 1, 0, 12)});
    }
  }
  static void TearDownTestSuite() {
    delete engine_;
    engine_ = nullptr;
    domains_.clear();
    prompt_.clear();
    layer_off_prompt_ppl_.clear();
  }
  void SetUp() override {
    if (engine_ == nullptr) {
      GTEST_SKIP() << "no golden module set at " << kModulesGolden
                   << " (written by tests/reference/make_modules_golden.py, the modules_golden ctest fixture)";
    }
  }
  static Engine* engine_;
  static std::vector<EvalDomain> domains_;
  // The reference's prompt as one chunk, and its float64 perplexity dense and with each layer's
  // modules disabled (the generator redraws until each of those moves it by > 1e-3).
  static TokenChunks prompt_;
  static double prompt_ppl_;
  static std::vector<double> layer_off_prompt_ppl_;
};
Engine* GoldenModules::engine_ = nullptr;
std::vector<EvalDomain> GoldenModules::domains_;
TokenChunks GoldenModules::prompt_;
double GoldenModules::prompt_ppl_ = 0;
std::vector<double> GoldenModules::layer_off_prompt_ppl_;

TEST_F(GoldenModules, TopK3TraceCountsThreeModulesPerTokenAndLayer) {
  auto policy = ParseRouterPolicy("top_k:3");
  ASSERT_TRUE(policy.ok());
  ModuleTrace trace;
  auto ppl = Perplexity(*engine_, domains_[0].chunks, &*policy, &trace);
  ASSERT_TRUE(ppl.ok()) << ppl.status();
  const ModuleSet& set = *engine_->modules();
  ASSERT_EQ(trace.num_layers, set.num_layers);
  ASSERT_EQ(trace.num_modules, set.num_modules);
  // Score forwards every token of a chunk but the last.
  EXPECT_EQ(trace.tokens, static_cast<uint64_t>(ppl->tokens));
  EXPECT_EQ(ppl->tokens, 36);
  for (int l = 0; l < trace.num_layers; ++l) {
    uint64_t sum = 0;
    for (int m = 0; m < trace.num_modules; ++m) sum += trace.at(l, m);
    EXPECT_EQ(sum, 3 * trace.tokens) << "layer " << l;
  }
  EXPECT_LT(trace.density(), 1.0);
}

TEST_F(GoldenModules, DisablingALayersModulesChangesPerplexity) {
  // Float32 engine against the float64 reference: perplexity within 1e-4 relative (the logits are
  // within 1e-4); the reference guarantees each layer's change exceeds 1e-3, so 1e-4 is a real test.
  constexpr double kTolerance = 1e-4;
  auto dense = Perplexity(*engine_, prompt_);
  ASSERT_TRUE(dense.ok()) << dense.status();
  EXPECT_NEAR(dense->ppl, prompt_ppl_, prompt_ppl_ * kTolerance);
  const ModuleSet& set = *engine_->modules();
  const size_t N = static_cast<size_t>(set.num_modules);
  RouterPolicy none;  // dense, an all-clear mask: the sparse path computing every module
  none.disabled = std::make_shared<const std::vector<uint8_t>>(set.num_layers * N, 0);
  auto same = Perplexity(*engine_, prompt_, &none);
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_NEAR(same->ppl, dense->ppl, dense->ppl * 1e-5);
  ASSERT_EQ(layer_off_prompt_ppl_.size(), static_cast<size_t>(set.num_layers));
  for (int layer = 0; layer < set.num_layers; ++layer) {
    auto mask = std::make_shared<std::vector<uint8_t>>(set.num_layers * N, 0);
    std::fill(mask->begin() + layer * N, mask->begin() + (layer + 1) * N, 1);
    RouterPolicy off;
    off.disabled = mask;
    auto pruned = Perplexity(*engine_, prompt_, &off);
    ASSERT_TRUE(pruned.ok()) << pruned.status();
    const double want = layer_off_prompt_ppl_[layer];
    EXPECT_NEAR(pruned->ppl, want, want * kTolerance) << "layer " << layer;
    EXPECT_GT(std::fabs(pruned->ppl / dense->ppl - 1.0), kTolerance)
        << "layer " << layer << ": dense " << dense->ppl << ", without the layer's modules " << pruned->ppl;
  }
}

TEST_F(GoldenModules, GridRouterAtDensityOneEqualsDense) {
  auto grid = RunEvalGrid(*engine_, domains_, {ModuleSelector::kRouter, ModuleSelector::kRandom}, {1.0f, 0.5f});
  ASSERT_TRUE(grid.ok()) << grid.status();
  ASSERT_EQ(grid->cells.size(), 4u);
  for (size_t d = 0; d < domains_.size(); ++d) {
    EXPECT_NEAR(grid->cells[0].per_domain[d].ppl, grid->dense[d].ppl, grid->dense[d].ppl * 1e-5);
    EXPECT_DOUBLE_EQ(grid->cells[0].traces[d].density(), 1.0);
    EXPECT_LT(grid->cells[1].traces[d].density(), 1.0);
  }
  const std::string table = FormatEvalGrid(*grid);
  EXPECT_NE(table.find("| domain | dense | router 1.0 | router 0.5 | random 1.0 | random 0.5 |"), std::string::npos)
      << table;
  EXPECT_NE(table.find("equals dense within float rounding"), std::string::npos) << table;
}

TEST_F(GoldenModules, PartitionExperimentRunsEndToEnd) {
  auto policy = ParseRouterPolicy("density:0.3:router");
  ASSERT_TRUE(policy.ok());
  auto r = RunPartitionExperiment(*engine_, domains_, *policy, 0.25);
  ASSERT_TRUE(r.ok()) << r.status();
  const ModuleSet& set = *engine_->modules();
  EXPECT_EQ(r->top_per_layer, TopModuleCount(set.num_modules, 0.25));
  ASSERT_EQ(r->top.size(), 2u);
  for (const auto& top : r->top) {
    for (int l = 0; l < set.num_layers; ++l) {
      int n = 0;
      for (int m = 0; m < set.num_modules; ++m) n += top[l * set.num_modules + m];
      EXPECT_EQ(n, r->top_per_layer);
    }
  }
  EXPECT_DOUBLE_EQ(r->overlap[0][0], 1.0);
  EXPECT_DOUBLE_EQ(r->overlap[0][1], r->overlap[1][0]);
  for (size_t a = 0; a < 2; ++a) {
    for (size_t b = 0; b < 2; ++b) EXPECT_GT(r->pruned_ppl[a][b], 0.0);
  }
  const std::string text = FormatPartition(*r);
  EXPECT_NE(text.find("(a) mean over layers of the Jaccard overlap"), std::string::npos) << text;
  EXPECT_NE(text.find("CONCEPTS.md §1 expects the diagonal"), std::string::npos) << text;
}

TEST_F(GoldenModules, PartitionNeedsAModuleSet) {
  EngineOptions o;
  o.model_dir = kModulesGolden + "/base";
  auto plain = Engine::Load(o);
  ASSERT_TRUE(plain.ok()) << plain.status();
  auto r = RunPartitionExperiment(**plain, domains_, RouterPolicy{}, 0.2);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace brickserve
