// The core map and the core-region guard. On a random model with a planted massive dimension
// (tests/reference/make_core_guard_fixture.py, the ctest fixture core_guard) the map finds exactly
// that dimension and its super weight; a trained LoRA passes the guard and deliberately broken ones
// are refused naming the layer, the matrix and the dimension. brick-tiny's map is computed and
// reported when the model is present.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "bricks/brick_loader.h"
#include "bricks/core_guard/core_guard.h"
#include "engine/engine.h"
#include "engine/model/calibration_text.h"
#include "engine/model/safetensors.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace brickserve {
namespace {

namespace fs = std::filesystem;

const std::string kDataDir = std::string(BRICKSERVE_TEST_DATA_DIR) + "/core_guard";
const std::string kBrickTiny = std::string(BRICKSERVE_SHARED_DIR) + "/models/brick-tiny";

#define SKIP_WITHOUT_FIXTURE()                                                                         \
  if (!fs::exists(kDataDir + "/core_guard_reference.json"))                                           \
  GTEST_SKIP() << "no core-guard data in " << kDataDir                                                \
               << ": run tests/reference/make_core_guard_fixture.py (the ctest fixture core_guard_setup " \
                  "does) with /usr/bin/python3 and python3-torch"

nlohmann::json Reference() {
  std::ifstream in(kDataDir + "/core_guard_reference.json");
  return nlohmann::json::parse(in);
}

std::unique_ptr<Engine> LoadEngine(const std::string& dir) {
  EngineOptions o;
  o.model_dir = dir;
  o.device.threads = 2;
  auto e = Engine::Load(o);
  EXPECT_TRUE(e.ok()) << e.status();
  return e.ok() ? *std::move(e) : nullptr;
}

absl::StatusOr<CoreMap> DefaultMap(Engine& e, const CoreMapOptions& options = {}) {
  return e.ComputeCoreMap(e.tokenizer().Encode(DefaultCalibrationText(), true), options);
}

// The planted model's map, computed once for the suite.
class CoreMapPlanted : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!fs::exists(kDataDir + "/core_guard_reference.json")) return;
    engine_ = LoadEngine(kDataDir + "/base_massive").release();
    ASSERT_NE(engine_, nullptr);
    auto map = DefaultMap(*engine_);
    ASSERT_TRUE(map.ok()) << map.status();
    map_ = new CoreMap(*std::move(map));
    std::cout << "base_massive core map: " << map_->Summary() << "\n";
  }
  static void TearDownTestSuite() {
    delete map_;
    delete engine_;
    map_ = nullptr;
    engine_ = nullptr;
  }
  static Engine* engine_;
  static CoreMap* map_;
};
Engine* CoreMapPlanted::engine_ = nullptr;
CoreMap* CoreMapPlanted::map_ = nullptr;

TEST_F(CoreMapPlanted, FindsExactlyThePlantedDimensionAndSuperWeight) {
  SKIP_WITHOUT_FIXTURE();
  ASSERT_NE(map_, nullptr);
  const auto ref = Reference();
  const int dim = ref["massive_dim"], layer = ref["massive_layer"];
  ASSERT_EQ(map_->dims.size(), 1u) << map_->Summary();
  EXPECT_EQ(map_->dims[0].dim, dim);
  EXPECT_EQ(map_->dims[0].first_layer, layer);
  EXPECT_GE(map_->dims[0].ratio, map_->ratio_threshold);
  EXPECT_EQ(map_->strongest.dim, dim);
  ASSERT_EQ(map_->super_weights.size(), 1u) << map_->Summary();
  const auto sw = ref["super_weight"].get<std::vector<int>>();
  EXPECT_EQ(map_->super_weights[0].layer, sw[0]);
  EXPECT_EQ(map_->super_weights[0].row, sw[1]);
  EXPECT_EQ(map_->super_weights[0].col, sw[2]);
  // Base norms: one per layer, target and dim, read from the checkpoint.
  ASSERT_EQ(map_->base_norms.size(), static_cast<size_t>(engine_->config().num_layers));
  for (const auto& layer_norms : map_->base_norms) {
    for (const auto& v : layer_norms) {
      ASSERT_EQ(v.size(), 1u);
      EXPECT_GT(v[0], 0);
    }
  }
}

TEST_F(CoreMapPlanted, JsonRoundTripsAndIsRefusedForAnotherModel) {
  SKIP_WITHOUT_FIXTURE();
  ASSERT_NE(map_, nullptr);
  auto back = CoreMapFromJson(CoreMapToJson(*map_), "test");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->model, map_->model);
  ASSERT_EQ(back->dims.size(), map_->dims.size());
  EXPECT_EQ(back->dims[0].dim, map_->dims[0].dim);
  EXPECT_EQ(back->dims[0].max_abs, map_->dims[0].max_abs);
  EXPECT_EQ(back->super_weights[0].value, map_->super_weights[0].value);
  EXPECT_EQ(back->base_norms, map_->base_norms);
  EXPECT_EQ(back->calibration_tokens, map_->calibration_tokens);

  const std::string path = kDataDir + "/base_massive.core_map.json";
  ASSERT_TRUE(WriteCoreMap(*map_, path).ok());
  auto same = ReadCoreMapFor(path, kDataDir + "/base_massive", engine_->config());
  EXPECT_TRUE(same.ok()) << same.status();

  // base_plain has the very same config.json; its norms tell it apart.
  const std::string other = kDataDir + "/base_plain";
  auto other_config = LoadModelConfig(other);
  ASSERT_TRUE(other_config.ok());
  auto stale = ReadCoreMapFor(path, other, *other_config);
  ASSERT_FALSE(stale.ok());
  EXPECT_EQ(stale.status().code(), absl::StatusCode::kFailedPrecondition) << stale.status();
  EXPECT_TRUE(absl::StrContains(stale.status().message(), "another model")) << stale.status();
  EXPECT_TRUE(absl::StrContains(stale.status().message(), "brickserve core-map")) << stale.status();
  std::cout << "stale map: " << stale.status() << "\n";

  auto text = CoreMapToJson(*map_);
  text.replace(text.find("\"version\": 1"), 12, "\"version\": 9");
  auto bad_version = CoreMapFromJson(text, "v9.json");
  EXPECT_EQ(bad_version.status().code(), absl::StatusCode::kInvalidArgument) << bad_version.status();
  EXPECT_TRUE(absl::StrContains(bad_version.status().message(), "version")) << bad_version.status();
  auto truncated = CoreMapFromJson(CoreMapToJson(*map_).substr(0, 200), "cut.json");
  EXPECT_EQ(truncated.status().code(), absl::StatusCode::kInvalidArgument) << truncated.status();
  EXPECT_EQ(ReadCoreMap(kDataDir + "/no_such.json").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(CoreMapPlanted, LoadOrComputeCachesAndRefusesAStaleCache) {
  SKIP_WITHOUT_FIXTURE();
  ASSERT_NE(engine_, nullptr);
  const std::string path = kDataDir + "/cached.core_map.json";
  fs::remove(path);
  bool computed = false;
  absl::Status written;
  auto first = engine_->LoadOrComputeCoreMap(path, {}, &computed, &written);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_TRUE(computed);
  EXPECT_TRUE(written.ok()) << written;
  ASSERT_EQ(first->dims.size(), 1u);
  auto second = engine_->LoadOrComputeCoreMap(path, {}, &computed, &written);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_FALSE(computed);
  EXPECT_EQ(second->base_norms, first->base_norms);
  // A cache written for another model (same config.json) is refused, not overwritten.
  auto plain = LoadEngine(kDataDir + "/base_plain");
  ASSERT_NE(plain, nullptr);
  auto stale = plain->LoadOrComputeCoreMap(path, {}, &computed);
  EXPECT_EQ(stale.status().code(), absl::StatusCode::kFailedPrecondition) << stale.status();
  EXPECT_FALSE(computed);
  // A directory that cannot be written still yields the map.
  auto unwritable = plain->LoadOrComputeCoreMap(kDataDir + "/no/such/dir/map.json", {}, &computed, &written);
  ASSERT_TRUE(unwritable.ok()) << unwritable.status();
  EXPECT_TRUE(computed);
  EXPECT_FALSE(written.ok());
}

TEST(CoreMap, RandomModelHasNoMassiveDims) {
  SKIP_WITHOUT_FIXTURE();
  auto engine = LoadEngine(kDataDir + "/base_plain");
  ASSERT_NE(engine, nullptr);
  auto map = DefaultMap(*engine);
  ASSERT_TRUE(map.ok()) << map.status();
  std::cout << "base_plain core map: " << map->Summary() << "\n";
  EXPECT_TRUE(map->dims.empty());
  EXPECT_TRUE(map->super_weights.empty());
  EXPECT_LT(map->strongest.ratio, 10);
  // A guard from an empty map lets everything through.
  EXPECT_FALSE(CoreGuard(*std::move(map)).active());
}

TEST(CoreMap, RefusesBadCalibration) {
  SKIP_WITHOUT_FIXTURE();
  auto engine = LoadEngine(kDataDir + "/base_plain");
  ASSERT_NE(engine, nullptr);
  EXPECT_EQ(engine->ComputeCoreMap({}).status().code(), absl::StatusCode::kInvalidArgument);
  const std::vector<int32_t> bad = {1, 100000};
  EXPECT_EQ(engine->ComputeCoreMap(bad).status().code(), absl::StatusCode::kInvalidArgument);
  const std::vector<int32_t> ok = {1, 5, 6};
  CoreMapOptions o;
  o.ratio = 0.5;
  EXPECT_EQ(engine->ComputeCoreMap(ok, o).status().code(), absl::StatusCode::kInvalidArgument);
}

// The largest relative delta an adapter puts on a protected coordinate, and where.
struct Measured {
  double relative = 0;
  std::string where;
};

Measured MeasureAdapter(const CoreGuard& guard, const std::string& dir) {
  std::ifstream in(dir + "/adapter_config.json");
  const auto cfg = nlohmann::json::parse(in);
  const float scale = cfg["lora_alpha"].get<float>() / cfg["r"].get<float>();
  auto file = SafetensorsFile::Open(dir + "/adapter_model.safetensors");
  EXPECT_TRUE(file.ok()) << file.status();
  Measured m;
  for (const auto& [name, a] : (*file)->tensors()) {
    const size_t at = name.find(".lora_A.");
    if (at == std::string::npos) continue;
    std::string b_name = name;
    b_name.replace(at, 8, ".lora_B.");
    const HostTensor& b = (*file)->tensors().at(b_name);
    // base_model.model.model.layers.L.<parent>.<module>.lora_A.weight
    const size_t lp = name.find("layers.") + 7;
    const int layer = std::stoi(name.substr(lp));
    const std::string module = name.substr(name.rfind('.', at - 1) + 1, at - name.rfind('.', at - 1) - 1);
    const LoraTarget t = *LoraTargetFromName(module);
    const double rel = guard.MaxRelativeDelta(layer, t, a, b, scale);
    if (rel > m.relative) m = {rel, absl::StrCat("layers.", layer, ".", module)};
  }
  return m;
}

TEST_F(CoreMapPlanted, GuardPassesTrainedAdapterAndRefusesBrokenOnes) {
  SKIP_WITHOUT_FIXTURE();
  ASSERT_NE(map_, nullptr);
  const CoreGuard guard(*map_);
  const std::string base_dir = kDataDir + "/base_massive";
  const BaseModel guarded{engine_->config(), base_dir, engine_->device(), &guard};
  const BaseModel unguarded{engine_->config(), base_dir, engine_->device()};
  std::cout << absl::StrFormat("%-18s %-10s %9s  %-26s %s\n", "adapter", "expect", "max rel.", "where",
                               "max |logit diff| vs base");
  int refused = 0, passed = 0;
  const auto ref = Reference();
  for (const auto& a : ref["adapters"]) {
    const std::string name = a["name"], expect = a["expect"];
    SCOPED_TRACE(name);
    const std::string dir = kDataDir + "/adapters/" + name;
    const Measured m = MeasureAdapter(guard, dir);
    std::cout << absl::StrFormat("%-18s %-10s %9.4f  %-26s %.3f (logits up to %.2f)\n", name, expect, m.relative,
                                 m.where, a["max_abs_logit_diff_vs_base"].get<double>(),
                                 a["base_logit_scale"].get<double>());
    // Every adapter is a valid PEFT adapter: without the guard it loads.
    auto plain = LoadBrickFromPath(dir, unguarded);
    EXPECT_TRUE(plain.ok()) << plain.status();
    auto brick = LoadBrickFromPath(dir, guarded);
    if (expect == "OK") {
      EXPECT_TRUE(brick.ok()) << brick.status();
      EXPECT_LE(m.relative, guard.options().max_relative_delta);
      ++passed;
    } else if (expect == "FAILED_PRECONDITION") {
      ASSERT_FALSE(brick.ok());
      EXPECT_EQ(brick.status().code(), absl::StatusCode::kFailedPrecondition) << brick.status();
      for (const auto& w : a["mentions"]) {
        EXPECT_TRUE(absl::StrContains(brick.status().message(), w.get<std::string>())) << brick.status();
      }
      EXPECT_TRUE(absl::StrContains(brick.status().message(), "bound 0.5")) << brick.status();
      std::cout << "  refused: " << brick.status().message() << "\n";
      EXPECT_GT(m.relative, guard.options().max_relative_delta);
      ++refused;
    } else {
      std::cout << "  (measured only) " << (brick.ok() ? "passes" : std::string(brick.status().message())) << "\n";
    }
  }
  EXPECT_EQ(passed, 1);
  EXPECT_EQ(refused, 2);
}

// --- the guard's arithmetic on a hand-made map ------------------------------------------------------

struct Tensor {
  std::vector<float> v;
  HostTensor t;
  Tensor(std::vector<int64_t> shape, std::vector<float> values) : v(std::move(values)) {
    t = {DType::kF32, std::move(shape), v.data(), nullptr};
  }
};

// hidden 4, intermediate 6, two layers; dim 2 protected with base norms 2.0 everywhere; one super
// weight at layers.1 down_proj[2, 5] = 4.
CoreMap HandMap() {
  CoreMap m;
  m.model = {"LlamaForCausalLM", 4, 6, 2, "0"};
  m.dims = {{2, 0, 100.0f, 80.0f}};
  m.super_weights = {{1, 2, 5, 4.0f, 50.0f, 100.0f}};
  m.base_norms.resize(2);
  for (auto& layer : m.base_norms) {
    for (auto& v : layer) v = {2.0f};
  }
  return m;
}

TEST(CoreGuard, RelativeDeltaOfRowsColumnsAndSuperWeights) {
  const CoreGuard guard(HandMap());
  // down_proj [4, 6], rank 1: ΔW = s · b aᵀ. Row 2 of ΔW = s · b[2] · a.
  Tensor a({1, 6}, {0, 0, 0, 0, 3, 0}), b({4, 1}, {0, 0, 1, 0});
  EXPECT_NEAR(guard.MaxRelativeDelta(0, LoraTarget::kDown, a.t, b.t, 0.5f), 0.5 * 3 / 2.0, 1e-6);
  EXPECT_TRUE(guard.CheckLoraPair(0, LoraTarget::kDown, a.t, b.t, 0.25f).ok());  // 0.375
  // The same pair touches the super weight [2, 5] at layer 1 only when a[5] is set: 0.5 · 3 / 4.
  Tensor a5({1, 6}, {0, 0, 0, 0, 0, 3});
  EXPECT_NEAR(guard.MaxRelativeDelta(1, LoraTarget::kDown, a5.t, b.t, 0.5f), 0.75, 1e-6);  // row: 0.75 too
  Tensor b_other({4, 1}, {1, 0, 0, 0});  // writes row 0 only: no protected coordinate
  EXPECT_EQ(guard.MaxRelativeDelta(1, LoraTarget::kDown, a5.t, b_other.t, 10.0f), 0.0);

  // q_proj [out 3, in 4]: column 2 of ΔW = s · b · a[2].
  Tensor qa({1, 4}, {0, 0, 2, 0}), qb({3, 1}, {1, 0, 1});
  EXPECT_NEAR(guard.MaxRelativeDelta(0, LoraTarget::kQ, qa.t, qb.t, 1.0f), 2 * std::sqrt(2.0) / 2.0, 1e-6);
  const absl::Status st = guard.CheckLoraPair(1, LoraTarget::kQ, qa.t, qb.t, 1.0f);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(st.message(), "core dimension 2 of layers.1.self_attn.q_proj (its column 2)")) << st;
  EXPECT_TRUE(absl::StrContains(st.message(), "1.414x")) << st;
  // Reading other dims only: a[2] = 0.
  Tensor qa0({1, 4}, {5, 5, 0, 5});
  EXPECT_TRUE(guard.CheckLoraPair(1, LoraTarget::kQ, qa0.t, qb.t, 1.0f).ok());

  // The super weight alone: a delta on [2, 5] and nothing else large. Row 2 norm = |ΔW[2,5]| too, so
  // the row finding (base 2) wins over the super weight (base 4); make the row's base large to see it.
  CoreMap m = HandMap();
  m.base_norms[1][static_cast<int>(LoraTarget::kDown)] = {1000.0f};
  const CoreGuard sw_guard(std::move(m));
  const absl::Status sw = sw_guard.CheckLoraPair(1, LoraTarget::kDown, a5.t, b.t, 1.0f);
  EXPECT_EQ(sw.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(sw.message(), "super weight [2, 5] of layers.1.mlp.down_proj is 0.75x")) << sw;
}

TEST(CoreGuard, DimIsProtectedFromTheLayerItAppearsAt) {
  CoreMap m = HandMap();
  m.dims[0].first_layer = 1;
  const CoreGuard guard(std::move(m));
  Tensor a({1, 6}, {0, 0, 0, 0, 3, 0}), b({4, 1}, {0, 0, 1, 0});
  EXPECT_EQ(guard.MaxRelativeDelta(0, LoraTarget::kDown, a.t, b.t, 1.0f), 0.0);
  EXPECT_NEAR(guard.MaxRelativeDelta(1, LoraTarget::kDown, a.t, b.t, 1.0f), 1.5, 1e-6);
}

TEST(CoreGuard, NanIsRefusedAndMisfitShapesAreLeftToValidation) {
  const CoreGuard guard(HandMap());
  Tensor a({1, 6}, {0, 0, 0, 0, std::nanf(""), 0}), b({4, 1}, {0, 0, 1, 0});
  EXPECT_EQ(guard.CheckLoraPair(0, LoraTarget::kDown, a.t, b.t, 1.0f).code(), absl::StatusCode::kFailedPrecondition);
  Tensor wrong_out({5, 1}, {0, 0, 1, 0, 0});  // down_proj must write hidden (4) rows
  Tensor big({1, 6}, {9, 9, 9, 9, 9, 9});
  EXPECT_TRUE(guard.CheckLoraPair(0, LoraTarget::kDown, big.t, wrong_out.t, 1.0f).ok());
  Tensor rank2({2, 6}, std::vector<float>(12, 9.0f));
  EXPECT_TRUE(guard.CheckLoraPair(0, LoraTarget::kDown, rank2.t, b.t, 1.0f).ok());  // A/B ranks differ
  EXPECT_TRUE(guard.CheckLoraPair(7, LoraTarget::kDown, big.t, b.t, 1.0f).ok());    // no such layer
}

TEST(CoreGuard, WidensHalfPrecisionElements) {
  const uint16_t f16[] = {0x3e00, 0xc000, 0x0001, 0x7c00};  // 1.5, -2, smallest subnormal, +inf
  HostTensor h{DType::kF16, {4}, f16, nullptr};
  EXPECT_EQ(WidenedElement(h, 0), 1.5f);
  EXPECT_EQ(WidenedElement(h, 1), -2.0f);
  EXPECT_EQ(WidenedElement(h, 2), std::ldexp(1.0f, -24));
  EXPECT_TRUE(std::isinf(WidenedElement(h, 3)));
  const uint16_t bf16[] = {0x3fc0, 0xbf80};  // 1.5, -1
  HostTensor b{DType::kBF16, {2}, bf16, nullptr};
  EXPECT_EQ(WidenedElement(b, 0), 1.5f);
  EXPECT_EQ(WidenedElement(b, 1), -1.0f);
}

// brick-tiny: the map on the built-in calibration text, reported for docs/BRICKS.md.
TEST(CoreMapBrickTiny, MapOnBuiltInCalibrationText) {
  if (!fs::exists(kBrickTiny + "/config.json")) {
    GTEST_SKIP() << "brick-tiny not found at " << kBrickTiny
                 << " (it lives in ../shared next to the checkout); skipping";
  }
  auto engine = LoadEngine(kBrickTiny);
  ASSERT_NE(engine, nullptr);
  const auto ids = engine->tokenizer().Encode(DefaultCalibrationText(), true);
  auto map = engine->ComputeCoreMap(ids);
  ASSERT_TRUE(map.ok()) << map.status();
  std::cout << "brick-tiny core map (" << ids.size() << " calibration tokens): " << map->Summary() << "\n";
  EXPECT_GE(ids.size(), 300u);
  // Measured: a 6-layer, 256-wide model has no massive activations; its strongest dim is ~5x the median.
  EXPECT_TRUE(map->dims.empty()) << map->Summary();
  auto back = CoreMapFromJson(CoreMapToJson(*map), "brick-tiny");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->model, map->model);
}

}  // namespace
}  // namespace brickserve
