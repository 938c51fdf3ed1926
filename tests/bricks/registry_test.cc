// The brick registry on real PEFT adapters (from the lora_golden fixture): load, update, unload
// while requests hold bricks; a failed load changes nothing; the memory budget evicts idle bricks
// least recently used and reloads them on use, with resident memory measured from live bricks.
#include "bricks/registry.h"

#include "absl/strings/match.h"
#include "bricks/brick_loader.h"
#include "bricks/digest.h"
#include "engine/model/llama_model.h"
#include "lora_golden_util.h"

namespace brickserve {
namespace {

class RegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    golden_ = testing::LoadLoraGolden();
    BS_SKIP_WITHOUT_LORA_GOLDEN(golden_);
    auto config = LoadModelConfig(golden_.base_dir("base"));
    ASSERT_TRUE(config.ok()) << config.status();
    device_ = *CreateDevice({"cpu", 1});
    base_ = BaseModel{*config, golden_.base_dir("base"), device_.get()};
  }
  std::unique_ptr<BrickRegistry> MakeRegistry(size_t budget = 0) {
    return std::make_unique<BrickRegistry>([this](const std::string& path) { return LoadBrickFromPath(path, base_); },
                                           BrickRegistryOptions{budget});
  }
  std::string Path(const std::string& adapter) const { return golden_.adapter_dir(adapter); }
  size_t SizeOf(const std::string& adapter) {
    auto b = LoadBrickFromPath(Path(adapter), base_);
    EXPECT_TRUE(b.ok()) << b.status();
    return b.ok() ? (*b)->size_bytes() : 0;
  }

  testing::LoraGolden golden_;
  std::unique_ptr<Device> device_;
  BaseModel base_;
};

TEST_F(RegistryTest, LoadGetListUnload) {
  auto reg = MakeRegistry();
  auto st = reg->Load("a", Path("a_r8_qv"));
  ASSERT_TRUE(st.ok()) << st.status();
  const auto sha = Sha256OfFile(Path("a_r8_qv") + "/adapter_model.safetensors");
  ASSERT_TRUE(sha.ok());
  EXPECT_EQ(st->sha256, *sha);
  EXPECT_EQ(st->version, sha->substr(0, 12));
  EXPECT_EQ(st->kind, BrickKind::kLora);
  EXPECT_EQ(st->state, BrickState::kReady);
  EXPECT_EQ(st->plugs_into, (std::vector<std::string>{"q_proj", "v_proj"}));
  EXPECT_EQ(st->size_bytes, SizeOf("a_r8_qv"));
  EXPECT_GT(st->size_bytes, 0u);
  ASSERT_TRUE(reg->Load("b", Path("b_r16_all")).ok());
  const auto list = reg->List();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].name, "a");
  EXPECT_EQ(list[1].name, "b");
  ASSERT_TRUE(reg->Acquire(std::vector<std::string>{"a", "b"}).ok());
  EXPECT_EQ(reg->Get("a")->requests_served, 1u);
  ASSERT_TRUE(reg->Unload("a").ok());
  EXPECT_EQ(reg->Get("a").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(reg->Unload("a").code(), absl::StatusCode::kNotFound);
  auto missing = reg->Acquire(std::vector<std::string>{"b", "nope"});
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(missing.status().message(), "\"nope\"")) << missing.status();
  EXPECT_EQ(reg->stats().resident_bytes, SizeOf("b_r16_all"));
  EXPECT_EQ(reg->stats().load_seconds.count, 2u);  // the two loads, timed
  EXPECT_GT(reg->stats().load_seconds.sum, 0.0);
}

TEST_F(RegistryTest, HeldBrickOutlivesUpdateAndUnload) {
  auto reg = MakeRegistry();
  ASSERT_TRUE(reg->Load("x", Path("a_r8_qv")).ok());
  auto held = reg->Acquire(std::vector<std::string>{"x"});
  ASSERT_TRUE(held.ok());
  const std::string old_sha = (*held)[0]->sha256();
  // Update: the name now serves the new version; the request keeps the one it started with.
  auto updated = reg->Load("x", Path("b_r16_all"));
  ASSERT_TRUE(updated.ok());
  EXPECT_NE(updated->sha256, old_sha);
  EXPECT_EQ((*held)[0]->sha256(), old_sha);
  EXPECT_EQ(reg->stats().resident_bytes, SizeOf("a_r8_qv") + SizeOf("b_r16_all"));
  auto fresh = reg->Acquire(std::vector<std::string>{"x"});
  ASSERT_TRUE(fresh.ok());
  EXPECT_EQ((*fresh)[0]->sha256(), updated->sha256);
  ASSERT_TRUE(reg->Unload("x").ok());
  EXPECT_EQ(reg->stats().resident_bytes, SizeOf("a_r8_qv") + SizeOf("b_r16_all"));
  held->clear();
  fresh->clear();
  EXPECT_EQ(reg->stats().resident_bytes, 0u);  // freed when the last holder let go
}

TEST_F(RegistryTest, FailedLoadChangesNothing) {
  auto reg = MakeRegistry();
  auto good = reg->Load("a", Path("a_r8_qv"));
  ASSERT_TRUE(good.ok());
  auto bad = reg->Load("a", Path("bad_shape"));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kFailedPrecondition) << bad.status();
  auto wrong_sha = reg->Load("a", Path("b_r16_all"), std::string(64, '0'));
  EXPECT_EQ(wrong_sha.status().code(), absl::StatusCode::kInvalidArgument) << wrong_sha.status();
  EXPECT_TRUE(absl::StrContains(wrong_sha.status().message(), "expected")) << wrong_sha.status();
  auto missing = reg->Load("c", "/nonexistent/brick");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound) << missing.status();
  EXPECT_EQ(reg->Get("a")->sha256, good->sha256);
  EXPECT_EQ(reg->Get("c").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(reg->stats().load_failures, 3u);
  // The right digest (any case) is accepted.
  std::string upper = good->sha256;
  for (char& ch : upper) ch = static_cast<char>(std::toupper(ch));
  EXPECT_TRUE(reg->Load("a2", Path("a_r8_qv"), upper).ok());
}

TEST_F(RegistryTest, BudgetEvictsIdleBricksLeastRecentlyUsedAndReloadsOnUse) {
  const size_t a = SizeOf("a_r8_qv"), b = SizeOf("b_r16_all"), c = SizeOf("c_r4_rslora_mlp");
  const size_t budget = std::max({a + b, b + c, a + c});  // any two fit, never all three
  ASSERT_LT(budget, a + b + c);
  auto reg = MakeRegistry(budget);
  ASSERT_TRUE(reg->Load("a", Path("a_r8_qv")).ok());
  ASSERT_TRUE(reg->Load("b", Path("b_r16_all")).ok());
  ASSERT_TRUE(reg->Acquire(std::vector<std::string>{"a"}).ok());  // a is now more recent than b
  ASSERT_TRUE(reg->Load("c", Path("c_r4_rslora_mlp")).ok());
  EXPECT_EQ(reg->Get("b")->state, BrickState::kEvicted);
  EXPECT_EQ(reg->Get("a")->state, BrickState::kReady);
  EXPECT_LE(reg->stats().resident_bytes, budget);
  // Using the evicted brick reloads it (evicting the least recently used idle one, a).
  auto got = reg->Acquire(std::vector<std::string>{"b"});
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(reg->Get("b")->state, BrickState::kReady);
  EXPECT_EQ(reg->Get("a")->state, BrickState::kEvicted);
  EXPECT_LE(reg->stats().resident_bytes, budget);
  EXPECT_EQ(reg->stats().evictions, 2u);
  EXPECT_EQ(reg->stats().reloads, 1u);
}

TEST_F(RegistryTest, UpdateAtTheBudgetReplacesAnIdleVersionButNotAHeldOne) {
  const size_t b = SizeOf("b_r16_all");
  auto reg = MakeRegistry(b);
  auto first = reg->Load("x", Path("b_r16_all"));
  ASSERT_TRUE(first.ok()) << first.status();
  // Idle: the old version is dropped by the swap, so the new one fits.
  auto second = reg->Load("x", Path("b_r16_all"));
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(reg->stats().resident_bytes, b);
  // Held by a request: both versions would be resident, beyond the budget; the held one stays.
  auto held = reg->Acquire(std::vector<std::string>{"x"});
  ASSERT_TRUE(held.ok());
  auto third = reg->Load("x", Path("b_r16_all"));
  EXPECT_EQ(third.status().code(), absl::StatusCode::kResourceExhausted) << third.status();
  EXPECT_EQ(reg->Get("x")->state, BrickState::kReady);
  EXPECT_EQ(reg->stats().resident_bytes, b);
}

TEST_F(RegistryTest, BricksInUseAreNeverEvicted) {
  const size_t a = SizeOf("a_r8_qv"), b = SizeOf("b_r16_all"), c = SizeOf("c_r4_rslora_mlp");
  auto reg = MakeRegistry(a + b);
  ASSERT_TRUE(reg->Load("a", Path("a_r8_qv")).ok());
  ASSERT_TRUE(reg->Load("b", Path("b_r16_all")).ok());
  auto held = reg->Acquire(std::vector<std::string>{"a", "b"});
  ASSERT_TRUE(held.ok());
  ASSERT_LE(c, a + b);
  auto full = reg->Load("c", Path("c_r4_rslora_mlp"));
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted) << full.status();
  EXPECT_TRUE(absl::StrContains(full.status().message(), "budget")) << full.status();
  EXPECT_EQ(reg->Get("a")->state, BrickState::kReady);
  EXPECT_EQ(reg->Get("b")->state, BrickState::kReady);
  EXPECT_EQ(reg->Get("c").status().code(), absl::StatusCode::kNotFound);
  // A brick larger than the whole budget is refused outright.
  auto small = MakeRegistry(a - 1);
  EXPECT_EQ(small->Load("a", Path("a_r8_qv")).status().code(), absl::StatusCode::kResourceExhausted);
}

}  // namespace
}  // namespace brickserve
