// Shared pieces of the device conformance suite (device_conformance_test.cc, device_conformance_model_test.cc):
// which device is under test, fresh random inputs in every weight type, poisoned buffers, and the one
// comparison helper with the tolerances it applies.
//
// The device under test (DUT) is chosen by BRICKSERVE_TEST_DEVICE:
//   cuda (default)  CreateDevice({"cuda"}); every test skips with "no CUDA device: ..." when that fails
//   cuda-fast       the same without batch invariance: cuBLAS products and the tiled prefill attention
//   cpu-gemm        the CPU without batch invariance (OpenBLAS SGEMM products and prefill attention),
//                   whose code paths differ from the reference's: it proves the suite's own logic
// The reference is always the CPU with batch invariance (row-wise kernels, the engine's default).
// BRICKSERVE_TEST_SEED=N replays the random inputs of a failed run (the seed is in every failure).
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "engine/backend/device.h"
#include "half_floats.h"
#include "random_host_data.h"
#include "gtest/gtest.h"

#define CONF_CONCAT_INNER(a, b) a##b
#define CONF_CONCAT(a, b) CONF_CONCAT_INNER(a, b)
// A fatal failure naming the expression and its status unless it is OK.
#define CONF_ASSERT_OK(expr)                                         \
  do {                                                               \
    const absl::Status conf_status_ = (expr);                        \
    ASSERT_TRUE(conf_status_.ok()) << #expr << ": " << conf_status_; \
  } while (0)
#define CONF_ASSIGN_OR_FAIL_IMPL(tmp, lhs, expr)          \
  auto tmp = (expr);                                      \
  ASSERT_TRUE(tmp.ok()) << #expr << ": " << tmp.status(); \
  lhs = *std::move(tmp)
// lhs = *expr, or a fatal failure naming the status (a statement sequence: brace it under if/for).
#define CONF_ASSIGN_OR_FAIL(lhs, expr) CONF_ASSIGN_OR_FAIL_IMPL(CONF_CONCAT(conf_or_, __LINE__), lhs, expr)

namespace brickserve::conformance {

// --- the devices ---

struct DeviceChoice {
  std::string name;       // the BRICKSERVE_TEST_DEVICE value
  DeviceOptions options;  // how the DUT is created
  bool known = true;
};

inline DeviceChoice DeviceUnderTest() {
  const char* env = std::getenv("BRICKSERVE_TEST_DEVICE");
  const std::string name = env != nullptr && *env != '\0' ? env : "cuda";
  if (name == "cuda") return {name, DeviceOptions{"cuda", 0, true}};
  if (name == "cuda-fast") return {name, DeviceOptions{"cuda", 0, false}};
  if (name == "cpu-gemm") return {name, DeviceOptions{"cpu", 0, false}};
  return {name, DeviceOptions{name, 0, true}, false};
}

inline DeviceOptions ReferenceOptions() { return DeviceOptions{"cpu", 0, true}; }

// The message a test skips with when the DUT cannot be created.
inline std::string UnavailableMessage(const DeviceChoice& choice, const absl::Status& status) {
  if (choice.options.kind == "cuda") return absl::StrCat("no CUDA device: ", status.ToString());
  return absl::StrCat("device under test \"", choice.name, "\" unavailable: ", status.ToString());
}

inline uint32_t TestSeed() {
  if (const char* s = std::getenv("BRICKSERVE_TEST_SEED"); s != nullptr && *s != '\0') {
    return static_cast<uint32_t>(std::strtoul(s, nullptr, 10));
  }
  return std::random_device{}();
}

// --- host data ---

using ::brickserve::testing::FromBF16;
using ::brickserve::testing::ToBF16;
using ::brickserve::testing::ToF16;

// A weight drawn at random and stored in `dtype`; the storage outlives every upload (the CPU uses
// matrices in place).
struct HostWeight {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  std::shared_ptr<std::vector<float>> f32;
  std::shared_ptr<std::vector<uint16_t>> half;

  HostTensor tensor() const {
    if (dtype == DType::kF32) return {dtype, shape, f32->data(), f32};
    return {dtype, shape, half->data(), half};
  }
};

inline HostWeight MakeWeight(DType dtype, std::vector<int64_t> shape, std::span<const float> values) {
  HostWeight w{dtype, std::move(shape), nullptr, nullptr};
  if (dtype == DType::kF32) {
    w.f32 = std::make_shared<std::vector<float>>(values.begin(), values.end());
  } else {
    w.half = std::make_shared<std::vector<uint16_t>>();
    for (float v : values) w.half->push_back(dtype == DType::kBF16 ? ToBF16(v) : ToF16(v));
  }
  return w;
}

using testing::RandomVector;

inline HostWeight RandomWeight(DType dtype, std::vector<int64_t> shape, std::mt19937& rng, float stddev,
                               float mean = 0.0f) {
  size_t n = 1;
  for (int64_t d : shape) n *= static_cast<size_t>(d);
  return MakeWeight(dtype, std::move(shape), RandomVector(n, rng, stddev, mean));
}

inline std::vector<float> Nans(size_t n) { return std::vector<float>(n, std::numeric_limits<float>::quiet_NaN()); }

inline int RandomInt(std::mt19937& rng, int lo, int hi) {  // [lo, hi]
  return std::uniform_int_distribution<int>(lo, hi)(rng);
}

// --- device data ---

inline absl::StatusOr<Buffer> BufferWith(Device& d, std::span<const float> values) {
  auto b = d.AllocBuffer(values.size());
  if (!b.ok()) return b.status();
  if (auto s = d.CopyToDevice(values, *b, 0); !s.ok()) return s;
  return b;
}

// The first `n` floats of `b` once every queued op has finished (ops are asynchronous on a GPU).
inline absl::StatusOr<std::vector<float>> Read(Device& d, const Buffer& b, size_t n) {
  if (auto s = d.Synchronize(); !s.ok()) return s;
  std::vector<float> host(n);
  if (auto s = d.CopyToHost(b, 0, host); !s.ok()) return s;
  return host;
}

// Creates the DUT and the reference for every test, and a seed that every failure message names.
// The DUT's batch-invariant twin (same kind, batch_invariant = true) is made by the tests that check
// invariance.
class DeviceConformance : public ::testing::Test {
 protected:
  void SetUp() override {
    choice_ = DeviceUnderTest();
    ASSERT_TRUE(choice_.known) << "BRICKSERVE_TEST_DEVICE=" << choice_.name << " is unknown (cuda | cpu-gemm)";
    auto dut = CreateDevice(choice_.options);
    if (!dut.ok()) GTEST_SKIP() << UnavailableMessage(choice_, dut.status());
    dut_ = *std::move(dut);
    auto ref = CreateDevice(ReferenceOptions());
    ASSERT_TRUE(ref.ok()) << ref.status();
    ref_ = *std::move(ref);
    seed_ = TestSeed();
    rng_.seed(seed_);
    seed_trace_.emplace(__FILE__, __LINE__,
                        absl::StrCat("seed ", seed_, " (replay: BRICKSERVE_TEST_SEED=", seed_, "), device under test ",
                                     choice_.name, " = ", dut_->name()));
  }
  void TearDown() override { seed_trace_.reset(); }

  // Index 0 is the DUT, 1 the reference: ops run on both with the same inputs.
  static constexpr int kSides = 2;
  template <typename T>
  using Pair = std::array<T, kSides>;
  Device& device(int side) { return side == 0 ? *dut_ : *ref_; }

  absl::StatusOr<Pair<Weight>> Upload(const HostTensor& t) {
    Pair<Weight> w;
    for (int side = 0; side < kSides; ++side) {
      auto u = device(side).UploadWeight(t);
      if (!u.ok()) return u.status();
      w[side] = *std::move(u);
    }
    return w;
  }
  absl::StatusOr<Pair<Weight>> Upload(const HostWeight& w) { return Upload(w.tensor()); }
  absl::StatusOr<Pair<Buffer>> Buffers(std::span<const float> init) {
    Pair<Buffer> b;
    for (int side = 0; side < kSides; ++side) {
      auto u = BufferWith(device(side), init);
      if (!u.ok()) return u.status();
      b[side] = *std::move(u);
    }
    return b;
  }
  absl::StatusOr<Pair<std::vector<float>>> ReadBoth(const Pair<Buffer>& b, size_t n) {
    Pair<std::vector<float>> host;
    for (int side = 0; side < kSides; ++side) {
      auto r = Read(device(side), b[side], n);
      if (!r.ok()) return r.status();
      host[side] = *std::move(r);
    }
    return host;
  }

  DeviceChoice choice_;
  std::unique_ptr<Device> dut_, ref_;
  uint32_t seed_ = 0;
  std::mt19937 rng_;
  std::optional<::testing::ScopedTrace> seed_trace_;
};

// --- comparison ---

// max |got - ref| over a row must stay within rel × max|ref row| (or rel × max(1, max|ref row|)
// with floor_one, so rows of tiny values are not held to a tighter absolute bound than big ones).
struct Tolerance {
  double rel = 0;
  bool floor_one = true;
  double Bound(double row_scale) const { return rel * (floor_one ? std::max(1.0, row_scale) : row_scale); }
};

// Pure data movement and single IEEE operations (Embed, Copy, Add, and every batch-invariance
// check) have exactly one right answer.
inline constexpr Tolerance kExact{0.0, false};
// Elementwise ops and attention (F32 in, F32 out): a backend may order sums differently, fuse
// multiply-adds and use its own exp/sin/cos, each worth a few F32 ulps: 1e-4 relative.
inline constexpr Tolerance kElementwise{1e-4, true};

// Products over weights of `dtype` (MatMul, SparseFfn, AddLora, the model's logits):
//  F32: summation order and FMA differ between backends (blocked GEMM, split-K): 1e-4 × max(1,
//       max|ref row|). TF32 tensor-core math (10 mantissa bits, ~1e-3) does not pass, by intent.
//  F16/BF16: a GPU may round the activations to the weight type before a tensor-core GEMM (cuBLAS),
//       an input error of 2^-9 (F16) to 2^-8 (BF16) per element: 2e-2 × max|ref row|.
inline Tolerance WeightTolerance(DType dtype) {
  return dtype == DType::kF32 ? Tolerance{1e-4, true} : Tolerance{2e-2, false};
}
inline Tolerance WeightTolerance(std::string_view dtype_name) {
  return WeightTolerance(dtype_name == "F32" ? DType::kF32 : dtype_name == "F16" ? DType::kF16 : DType::kBF16);
}

inline bool SameBits(float a, float b) { return std::memcmp(&a, &b, sizeof(float)) == 0; }

// Compares `rows` rows of width `cols` (`got` and `ref` start at the first of them): every element
// of got must be finite and the row's max error within tol. Returns the number of bad rows; reports
// the first few.
inline int ExpectRowsClose(std::span<const float> got, std::span<const float> ref, size_t rows, size_t cols,
                           Tolerance tol, std::string_view what) {
  int bad = 0;
  for (size_t r = 0; r < rows; ++r) {
    double err = 0, scale = 0;
    size_t worst = 0, non_finite = 0, first_non_finite = 0;
    for (size_t c = 0; c < cols; ++c) {
      const float g = got[r * cols + c], w = ref[r * cols + c];
      scale = std::max(scale, static_cast<double>(std::fabs(w)));
      if (!std::isfinite(g)) {
        if (non_finite++ == 0) first_non_finite = c;
        continue;
      }
      const double e = std::fabs(static_cast<double>(g) - w);
      if (e > err) {
        err = e;
        worst = c;
      }
    }
    const double bound = tol.Bound(scale);
    if (non_finite == 0 && err <= bound) continue;
    if (++bad > 4) continue;
    const size_t c = non_finite ? first_non_finite : worst;
    ADD_FAILURE() << what << ": row " << r << " of " << rows << ": col " << c << " got " << got[r * cols + c]
                  << " want " << ref[r * cols + c] << "; " << non_finite << " non-finite, max error " << err
                  << " vs bound " << bound << " (max|ref row| " << scale << ", rel " << tol.rel << ")";
  }
  if (bad > 4) ADD_FAILURE() << what << ": " << bad - 4 << " more rows differ";
  return bad;
}

// Elements the op must not write: bit-identical to what they held before (NaN poison stays NaN).
inline void ExpectUntouched(std::span<const float> got, std::span<const float> before, std::string_view what) {
  size_t changed = 0, first = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const bool same = std::isnan(before[i]) ? std::isnan(got[i]) : SameBits(got[i], before[i]);
    if (!same && changed++ == 0) first = i;
  }
  EXPECT_EQ(changed, 0u) << what << ": " << changed << " elements the op must not write changed, first at " << first
                         << " (" << before[first] << " -> " << got[first] << ")";
}

}  // namespace brickserve::conformance
