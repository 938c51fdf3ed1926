// The watched brick directory: a new subdirectory is loaded under its name, changed files update
// it, a removed directory is unloaded; a bad brick is reported once and retried only when it changes.
#include "bricks/brick_dir_watcher.h"

#include <filesystem>

#include "absl/strings/match.h"
#include "bricks/brick_loader.h"
#include "lora_golden_util.h"

namespace brickserve {
namespace {

namespace fs = std::filesystem;

TEST(BrickDirWatcher, LoadsUpdatesAndUnloadsSubdirectories) {
  const auto g = testing::LoadLoraGolden();
  BS_SKIP_WITHOUT_LORA_GOLDEN(g);
  auto config = LoadModelConfig(g.base_dir("base"));
  ASSERT_TRUE(config.ok());
  auto device = *CreateDevice({"cpu", 1});
  const BaseModel base{*config, g.base_dir("base"), device.get()};
  BrickRegistry registry([&](const std::string& p) { return LoadBrickFromPath(p, base); }, {});
  const fs::path dir = fs::path(::testing::TempDir()) / ("brick_dir_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::vector<std::string> log;
  BrickDirWatcher watcher(&registry, dir.string(), std::chrono::hours(1),
                          [&](const std::string& line) { log.push_back(line); });

  fs::copy(g.adapter_dir("a_r8_qv"), dir / "alpha");
  fs::copy(g.adapter_dir("bad_shape"), dir / "broken");
  fs::create_directories(dir / "empty");      // no files yet: skipped until something appears
  fs::create_directories(dir / "bad name!");  // not a brick name: ignored
  const absl::Status first = watcher.ScanOnce();
  EXPECT_EQ(first.code(), absl::StatusCode::kFailedPrecondition) << first;
  auto alpha = registry.Get("alpha");
  ASSERT_TRUE(alpha.ok());
  EXPECT_EQ(registry.Get("broken").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(registry.List().size(), 1u);
  EXPECT_EQ(registry.stats().load_failures_by_brick.at("broken"), 1u);

  // Nothing changed: nothing is reloaded, the bad brick is not retried.
  EXPECT_TRUE(watcher.ScanOnce().ok());
  EXPECT_EQ(registry.stats().loads, 1u);
  EXPECT_EQ(registry.stats().load_failures, 1u);

  // New files in alpha: an update to the new version.
  fs::remove_all(dir / "alpha");
  fs::copy(g.adapter_dir("d_r64_attn_f16"), dir / "alpha");
  ASSERT_TRUE(watcher.ScanOnce().ok());
  auto updated = registry.Get("alpha");
  ASSERT_TRUE(updated.ok());
  EXPECT_NE(updated->sha256, alpha->sha256);

  // The broken brick fixed: loaded. Alpha removed: unloaded.
  fs::remove_all(dir / "broken");
  fs::copy(g.adapter_dir("c_r4_rslora_mlp"), dir / "broken");
  fs::remove_all(dir / "alpha");
  ASSERT_TRUE(watcher.ScanOnce().ok());
  EXPECT_TRUE(registry.Get("broken").ok());
  EXPECT_EQ(registry.Get("alpha").status().code(), absl::StatusCode::kNotFound);
  bool logged_unload = false;
  for (const auto& line : log) logged_unload |= absl::StrContains(line, "unloaded alpha");
  EXPECT_TRUE(logged_unload);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace brickserve
