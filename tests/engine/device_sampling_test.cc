// Device::SampleTokens against the host Sampler: same logits, same processors, same draw, same
// token. Runs on the device named by BRICKSERVE_TEST_DEVICE (cuda by default; cpu-gemm is the CPU
// backend, whose SampleTokens is the host code path) and skips with a message when it is absent.
#include <cstdlib>
#include <random>
#include <string>

#include "engine/backend/device.h"
#include "engine/sampling/sampler.h"
#include "gtest/gtest.h"

namespace brickserve {
namespace {

std::unique_ptr<Device> DeviceUnderTest(std::string* why) {
  const char* env = std::getenv("BRICKSERVE_TEST_DEVICE");
  const std::string kind = env != nullptr && *env != '\0' ? env : "cuda";
  DeviceOptions o;  // as in device_conformance_util.h: cuda, cuda-fast, cpu-gemm
  o.kind = kind == "cpu-gemm" ? "cpu" : kind == "cuda-fast" ? "cuda" : kind;
  o.batch_invariant = kind != "cpu-gemm" && kind != "cuda-fast";
  absl::StatusOr<std::unique_ptr<Device>> d = CreateDevice(o);
  if (!d.ok()) {
    *why = std::string(d.status().message());
    return nullptr;
  }
  return *std::move(d);
}

class DeviceSampling : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    device_ = DeviceUnderTest(&why);
    if (device_ == nullptr) GTEST_SKIP() << "no device to test: " << why;
    seed_ = std::random_device{}();
    rng_.seed(seed_);
  }

  std::vector<float> Logits(int vocab, bool with_ties) {
    std::normal_distribution<float> dist(0.0f, 3.0f);
    std::vector<float> v(vocab);
    for (auto& x : v) x = dist(rng_);
    if (with_ties) {  // padded vocabularies give many equal logits
      for (int i = vocab / 2; i < vocab; i += 3) v[i] = v[vocab / 2];
    }
    return v;
  }

  SampleRow RandomRow(int vocab, std::vector<PenaltyToken>* penalties) {
    std::uniform_real_distribution<float> u01(0.0f, 1.0f);
    SampleRow r;
    const int kind = static_cast<int>(rng_() % 6);
    r.temperature = kind == 0 ? 0.0f : 0.2f + 1.8f * u01(rng_);
    if (kind == 2 || kind == 5) r.top_k = 1 + static_cast<int>(rng_() % 64);
    if (kind == 3 || kind == 5) r.top_p = 0.05f + 0.9f * u01(rng_);
    if (kind == 4 || kind == 5) r.min_p = 0.3f * u01(rng_);
    if (rng_() % 2) r.repetition_penalty = 0.5f + 1.5f * u01(rng_);
    if (rng_() % 2) r.presence_penalty = 2.0f * u01(rng_) - 1.0f;
    if (rng_() % 2) r.frequency_penalty = 2.0f * u01(rng_) - 1.0f;
    r.uniform = std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
    penalties->clear();
    for (int i = 0; i < 40; ++i) {
      const int32_t id = static_cast<int32_t>(rng_() % vocab);
      bool dup = false;
      for (const auto& t : *penalties) dup |= t.id == id;
      if (!dup) penalties->push_back({id, static_cast<int32_t>(rng_() % 4), static_cast<int32_t>(rng_() % 2)});
    }
    r.penalties = *penalties;
    return r;
  }

  std::unique_ptr<Device> device_;
  uint32_t seed_ = 0;
  std::mt19937_64 rng_;
};

TEST_F(DeviceSampling, SameTokenAndPenalisedLogitsAsTheHost) {
  SCOPED_TRACE(testing::Message() << "seed " << seed_);
  for (int vocab : {7, 1000, 32000, 50257}) {
    const int rows = 12;
    std::vector<float> logits;
    std::vector<std::vector<PenaltyToken>> penalties(rows);
    std::vector<SampleRow> params;
    for (int r = 0; r < rows; ++r) {
      const auto l = Logits(vocab, r % 3 == 0);
      logits.insert(logits.end(), l.begin(), l.end());
      params.push_back(RandomRow(vocab, &penalties[r]));
    }
    absl::StatusOr<Buffer> buf = device_->AllocBuffer(logits.size());
    ASSERT_TRUE(buf.ok()) << buf.status();
    ASSERT_TRUE(device_->CopyToDevice(logits, *buf, 0).ok());
    std::vector<int32_t> ids(rows, -1);
    const absl::Status st = device_->SampleTokens(*buf, vocab, params, ids);
    ASSERT_TRUE(st.ok()) << st;
    std::vector<float> after(logits.size());
    ASSERT_TRUE(device_->CopyToHost(*buf, 0, after).ok());
    ASSERT_TRUE(device_->Synchronize().ok());
    std::vector<std::pair<float, int32_t>> scratch;
    for (int r = 0; r < rows; ++r) {
      SCOPED_TRACE(testing::Message() << "vocab " << vocab << " row " << r << " temperature " << params[r].temperature
                                      << " top_k " << params[r].top_k << " top_p " << params[r].top_p << " min_p "
                                      << params[r].min_p);
      std::span<float> host(logits.data() + static_cast<size_t>(r) * vocab, vocab);
      EXPECT_EQ(ids[r], SampleOnHost(host, params[r], &scratch));
      for (int i = 0; i < vocab; ++i) {
        ASSERT_EQ(after[static_cast<size_t>(r) * vocab + i], host[i]) << "penalised logit " << i;
      }
    }
  }
}

// The engine's path: Sampler::Row / Record around the device pick gives the tokens that
// Sampler::Sample gives from the same seed, penalties following the generated tokens.
TEST_F(DeviceSampling, StepsThroughRowAndRecordMatchSample) {
  SCOPED_TRACE(testing::Message() << "seed " << seed_);
  const int vocab = 3000;
  SamplingParams p;
  p.temperature = 0.8f;
  p.top_k = 40;
  p.repetition_penalty = 1.3f;
  p.frequency_penalty = 0.4f;
  p.presence_penalty = 0.2f;
  p.seed = seed_;
  const std::vector<int32_t> prompt = {5, 17, 17, 2999, 40};
  Sampler host(p, prompt), dev(p, prompt);
  absl::StatusOr<Buffer> buf = device_->AllocBuffer(vocab);
  ASSERT_TRUE(buf.ok()) << buf.status();
  std::vector<PenaltyToken> penalties;
  for (int step = 0; step < 24; ++step) {
    // Logits favouring recent tokens, so the penalties matter.
    std::vector<float> logits = Logits(vocab, false);
    for (int32_t id : prompt) logits[id] += 4.0f;
    std::vector<float> copy = logits;
    const int32_t want = host.Sample(copy);
    SampleRow row;
    dev.Row(vocab, &penalties, &row);
    ASSERT_TRUE(device_->CopyToDevice(logits, *buf, 0).ok());
    int32_t got = -1;
    const absl::Status st = device_->SampleTokens(*buf, vocab, {&row, 1}, {&got, 1});
    ASSERT_TRUE(st.ok()) << st;
    dev.Record(got);
    ASSERT_EQ(got, want) << "step " << step;
  }
}

}  // namespace
}  // namespace brickserve
