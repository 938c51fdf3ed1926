// CPU backend ops against plain double-precision loops, on fresh random inputs with odd sizes
// (vector tails, GEMM tiles that do not divide the rows, every weight dtype).
#include <cmath>
#include <cstring>
#include <random>

#include "engine/backend/cpu/cpu_device.h"
#include "gtest/gtest.h"
#include "random_host_data.h"

namespace brickserve {
namespace {

using testing::RandomMatrix;
using testing::RandomVector;

// Both kernel families: batch-invariant (row-wise kernels only) and not (SGEMM above 8 rows).
class CpuDeviceModes : public ::testing::TestWithParam<bool> {};
INSTANTIATE_TEST_SUITE_P(BatchInvariance, CpuDeviceModes, ::testing::Bool());

TEST_P(CpuDeviceModes, MatMulMatchesDoubleReferenceForEveryDtypeAndShape) {
  std::mt19937 rng(std::random_device{}());
  CpuDevice dev(2, GetParam());
  for (DType t : {DType::kF32, DType::kBF16, DType::kF16}) {
    for (int rows : {1, 3, 5, 8, 9, 37}) {  // <= 8: matrix-vector kernel; > 8: SGEMM (tiles of 256)
      const int64_t in = 1 + rng() % 300, out = 1 + rng() % 600;
      RandomMatrix w(t, out, in, rng);
      auto weight = dev.UploadWeight(w.tensor());
      ASSERT_TRUE(weight.ok());
      const auto x = RandomVector(rows * in, rng);
      auto xb = dev.AllocBuffer(x.size());
      auto yb = dev.AllocBuffer(rows * out);
      ASSERT_TRUE(dev.CopyToDevice(x, *xb, 0).ok());
      ASSERT_TRUE(dev.MatMul(*xb, rows, *weight, nullptr, *yb).ok());
      for (int r = 0; r < rows; ++r) {
        for (int64_t o = 0; o < out; ++o) {
          double want = 0, mag = 0;
          for (int64_t k = 0; k < in; ++k) {
            want += x[r * in + k] * w.exact[o * in + k];
            mag += std::fabs(x[r * in + k] * w.exact[o * in + k]);
          }
          // F32 accumulation: error grows with the sum of magnitudes, ~in * 2^-24 relative.
          ASSERT_NEAR(yb->data[r * out + o], want, 1e-6 * mag + 1e-6)
              << DTypeName(t) << " rows " << rows << " in " << in << " out " << out << " at " << r << "," << o;
        }
      }
    }
  }
}

TEST(CpuDevice, EmbedRmsNormRopeSwiGlu) {
  std::mt19937 rng(std::random_device{}());
  CpuDevice dev(2, true);
  const int64_t V = 11, H = 37;
  RandomMatrix table(DType::kBF16, V, H, rng);
  auto tw = dev.UploadWeight(table.tensor());
  ASSERT_TRUE(tw.ok());
  const std::vector<int32_t> ids = {3, 0, 10};
  auto x = dev.AllocBuffer(ids.size() * H);
  ASSERT_TRUE(dev.Embed(*tw, ids, *x).ok());
  for (size_t i = 0; i < ids.size(); ++i)
    for (int64_t k = 0; k < H; ++k) ASSERT_EQ(x->data[i * H + k], table.exact[ids[i] * H + k]);
  EXPECT_EQ(dev.Embed(*tw, std::vector<int32_t>{11}, *x).code(), absl::StatusCode::kOutOfRange);

  const auto g = RandomVector(H, rng);
  auto gw = dev.UploadWeight({DType::kF32, {H}, g.data(), nullptr});
  auto y = dev.AllocBuffer(ids.size() * H);
  ASSERT_TRUE(dev.RmsNorm(*x, *gw, 3, 1e-5f, *y).ok());
  for (int r = 0; r < 3; ++r) {
    double ss = 0;
    for (int64_t k = 0; k < H; ++k) ss += x->data[r * H + k] * x->data[r * H + k];
    const double inv = 1 / std::sqrt(ss / H + 1e-5);
    for (int64_t k = 0; k < H; ++k) ASSERT_NEAR(y->data[r * H + k], x->data[r * H + k] * inv * g[k], 1e-5);
  }

  const int heads = 3, hd = 10;
  const std::vector<float> inv_freq = {1.0f, 0.3f, 0.1f, 0.03f, 0.01f};
  auto fw = dev.UploadWeight({DType::kF32, {5}, inv_freq.data(), nullptr});
  const auto q = RandomVector(2 * heads * hd, rng);
  auto qb = dev.AllocBuffer(q.size());
  ASSERT_TRUE(dev.CopyToDevice(q, *qb, 0).ok());
  const std::vector<int32_t> pos = {7, 300};
  ASSERT_TRUE(dev.Rope(*qb, 2, heads, hd, pos, *fw).ok());
  for (int r = 0; r < 2; ++r)
    for (int h = 0; h < heads; ++h)
      for (int i = 0; i < hd / 2; ++i) {
        const double a = pos[r] * static_cast<double>(inv_freq[i]);
        const float* in = q.data() + (r * heads + h) * hd;
        const float* o = qb->data + (r * heads + h) * hd;
        ASSERT_NEAR(o[i], in[i] * std::cos(a) - in[i + hd / 2] * std::sin(a), 1e-5);
        ASSERT_NEAR(o[i + hd / 2], in[i + hd / 2] * std::cos(a) + in[i] * std::sin(a), 1e-5);
      }

  const size_t n = 1000 + rng() % 100;
  const auto gate = RandomVector(n, rng), up = RandomVector(n, rng);
  auto gb = dev.AllocBuffer(n), ub = dev.AllocBuffer(n);
  ASSERT_TRUE(dev.CopyToDevice(gate, *gb, 0).ok());
  ASSERT_TRUE(dev.CopyToDevice(up, *ub, 0).ok());
  ASSERT_TRUE(dev.SwiGlu(*gb, *ub, n, *gb).ok());
  for (size_t i = 0; i < n; ++i) ASSERT_NEAR(gb->data[i], gate[i] / (1 + std::exp(-double{gate[i]})) * up[i], 1e-5);
}

// Paged attention through scattered block tables, for decode rows and prefill chunks (the SGEMM
// path), against a direct softmax over a contiguous copy.
TEST_P(CpuDeviceModes, PagedAttentionMatchesDirectComputation) {
  std::mt19937 rng(std::random_device{}());
  CpuDevice dev(2, GetParam());
  const int heads = 6, kv_heads = 2, hd = 20, bs = 4, blocks = 40;
  KvCacheSpec spec{1, kv_heads, hd, bs, blocks};
  auto cache = dev.AllocKvCache(spec);
  ASSERT_TRUE(cache.ok());
  for (int q_len : {1, 3, 17, 40}) {
    const int ctx = q_len + static_cast<int>(rng() % 30);
    std::vector<int32_t> table;  // scattered blocks
    for (int b = 0; b < (ctx + bs - 1) / bs; ++b) table.push_back((b * 7 + 3) % blocks);
    const auto k = RandomVector(ctx * kv_heads * hd, rng), v = RandomVector(ctx * kv_heads * hd, rng);
    auto kb = dev.AllocBuffer(k.size()), vb = dev.AllocBuffer(v.size());
    ASSERT_TRUE(dev.CopyToDevice(k, *kb, 0).ok());
    ASSERT_TRUE(dev.CopyToDevice(v, *vb, 0).ok());
    std::vector<int32_t> slots;
    for (int t = 0; t < ctx; ++t) slots.push_back(table[t / bs] * bs + t % bs);
    ASSERT_TRUE(dev.WriteKv(*cache, 0, *kb, *vb, slots).ok());
    const auto q = RandomVector(q_len * heads * hd, rng);
    auto qb = dev.AllocBuffer(q.size()), ob = dev.AllocBuffer(q.size());
    ASSERT_TRUE(dev.CopyToDevice(q, *qb, 0).ok());
    const AttentionSeq seq{0, q_len, ctx, table};
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    ASSERT_TRUE(dev.Attention(*qb, *cache, 0, {&seq, 1}, {heads, kv_heads, hd, scale}, *ob).ok());
    for (int i = 0; i < q_len; ++i) {
      const int pos = ctx - q_len + i;
      for (int h = 0; h < heads; ++h) {
        const int kvh = h / (heads / kv_heads);
        std::vector<double> s(pos + 1);
        double mx = -1e300, sum = 0;
        for (int t = 0; t <= pos; ++t) {
          double d = 0;
          for (int e = 0; e < hd; ++e) d += q[(i * heads + h) * hd + e] * k[(t * kv_heads + kvh) * hd + e];
          s[t] = d * scale;
          mx = std::max(mx, s[t]);
        }
        for (auto& x : s) sum += x = std::exp(x - mx);
        for (int e = 0; e < hd; ++e) {
          double want = 0;
          for (int t = 0; t <= pos; ++t) want += s[t] / sum * v[(t * kv_heads + kvh) * hd + e];
          ASSERT_NEAR(ob->data[(i * heads + h) * hd + e], want, 1e-5) << "q_len " << q_len << " row " << i << " head " << h;
        }
      }
    }
  }
}

// With batch invariance, a row's product is bit-identical whatever else is in the call: this is
// what makes continuous batching give every request the output it would get alone.
TEST(CpuDevice, BatchInvariantMatMulRowsDoNotDependOnTheOtherRows) {
  std::mt19937 rng(std::random_device{}());
  CpuDevice dev(2, true);
  for (DType t : {DType::kF32, DType::kBF16}) {
    const int64_t in = 64 + rng() % 200, out = 100 + rng() % 300;
    const int rows = 37;
    RandomMatrix w(t, out, in, rng);
    auto weight = dev.UploadWeight(w.tensor());
    ASSERT_TRUE(weight.ok());
    const auto x = RandomVector(rows * in, rng);
    auto all = dev.AllocBuffer(rows * out);
    auto xb = dev.AllocBuffer(x.size());
    ASSERT_TRUE(dev.CopyToDevice(x, *xb, 0).ok());
    ASSERT_TRUE(dev.MatMul(*xb, rows, *weight, nullptr, *all).ok());
    for (int sub : {1, 2, 5, 16}) {
      const int first = static_cast<int>(rng() % (rows - sub + 1));
      auto xs = dev.AllocBuffer(sub * in), ys = dev.AllocBuffer(sub * out);
      ASSERT_TRUE(dev.CopyToDevice(std::span<const float>(x).subspan(first * in, sub * in), *xs, 0).ok());
      ASSERT_TRUE(dev.MatMul(*xs, sub, *weight, nullptr, *ys).ok());
      for (int64_t i = 0; i < sub * out; ++i) {
        ASSERT_EQ(ys->data[i], all->data[first * out + i]) << DTypeName(t) << " rows " << sub << " from " << first;
      }
    }
  }
}

}  // namespace
}  // namespace brickserve
