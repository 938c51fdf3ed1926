// Module quality on the real pretrained brick-tiny (skipped without ../shared): `modules build` on
// calibration text from the second half of the eval files (the scored chunks are their first
// ones), then perplexity of held-out code and prose: the learned router at density 0.5 stays
// within the literature's +10 % target band (15 % allowed here on half the chunks), beats random
// module choice by a wide margin, and all modules reproduce the dense model.
#include <filesystem>

#include "engine/cli/perplexity.h"
#include "engine/engine.h"
#include "engine/modules/module_builder.h"
#include "engine/util/read_file.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace brickserve {
namespace {

const std::string kModel = std::string(BRICKSERVE_SHARED_DIR) + "/models/brick-tiny";

// 6000 characters from the middle of each eval file, interleaved in blocks of 1500.
std::string CalibrationText() {
  std::vector<std::string> tails;
  for (const char* d : {"code", "math", "prose", "zh"}) {
    const std::string text = *ReadFileToString(kModel + "/eval/" + d + ".txt");
    tails.push_back(text.substr(text.size() / 2, 6000));
  }
  std::string out;
  for (size_t off = 0; off < 6000; off += 1500) {
    for (const std::string& t : tails) out += t.substr(std::min(off, t.size()), 1500) + "\n";
  }
  return out;
}

TEST(ModuleQuality, LearnedRouterKeepsPerplexityAndBeatsRandom) {
  if (!std::filesystem::exists(kModel + "/model.safetensors")) {
    GTEST_SKIP() << "brick-tiny is not at " << kModel << " (../shared/models/brick-tiny)";
  }
  EngineOptions eo;
  eo.model_dir = kModel;
  eo.device.threads = 2;
  auto builder_engine = Engine::Load(eo);
  ASSERT_TRUE(builder_engine.ok()) << builder_engine.status();
  const auto ids = (*builder_engine)->tokenizer().Encode(CalibrationText(), true);
  auto core_map = (*builder_engine)->ComputeCoreMap(ids);
  ASSERT_TRUE(core_map.ok()) << core_map.status();
  auto set = BuildModuleSet(**builder_engine, ids, *core_map, {});
  ASSERT_TRUE(set.ok()) << set.status();
  EXPECT_EQ(set->module_size, 8) << "about 96 modules of d_ff 704";
  const auto report = nlohmann::json::parse(set->report_json);
  for (const auto& layer : report["layers"]) {
    EXPECT_GT(std::max(layer["recall_linear"].get<double>(), layer["recall_centroid"].get<double>()), 0.8)
        << "layer " << layer["layer"] << ": the kept router catches most of the oracle's top-k activation mass";
  }
  const std::string path = ::testing::TempDir() + "/brick_tiny_modules_" + std::to_string(getpid()) + ".safetensors";
  ASSERT_TRUE(WriteModuleSet(*set, path).ok());
  builder_engine->reset();

  eo.modules_path = path;
  auto engine = Engine::Load(eo);
  ASSERT_TRUE(engine.ok()) << engine.status();
  RouterPolicy all{RouterMode::kDensity, ModuleSelector::kRouter, 0, 1.0f};
  RouterPolicy router{RouterMode::kDensity, ModuleSelector::kRouter, 0, 0.5f};
  RouterPolicy random{RouterMode::kDensity, ModuleSelector::kRandom, 0, 0.5f};
  for (const char* domain : {"code", "prose"}) {
    SCOPED_TRACE(domain);
    auto chunks = TokenizeEvalChunks(**engine, *ReadFileToString(kModel + "/eval/" + domain + ".txt"), 4, 255);
    ASSERT_TRUE(chunks.ok()) << chunks.status();
    const double dense = Perplexity(**engine, *chunks)->ppl;
    const double every = Perplexity(**engine, *chunks, &all)->ppl;
    const double routed = Perplexity(**engine, *chunks, &router)->ppl;
    const double chance = Perplexity(**engine, *chunks, &random)->ppl;
    std::printf("%s: dense %.2f, all modules %.2f, router 0.5 %.2f (%+.1f%%), random 0.5 %.2f (%+.1f%%)\n", domain,
                dense, every, routed, 100 * (routed / dense - 1), chance, 100 * (chance / dense - 1));
    EXPECT_NEAR(every / dense, 1.0, 1e-4);
    EXPECT_LT(routed / dense, 1.15);
    EXPECT_GT(chance / dense - 1, 4 * (routed / dense - 1)) << "random module choice must be far worse";
  }
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace brickserve
