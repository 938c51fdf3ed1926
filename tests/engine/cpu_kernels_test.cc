// The CPU kernels on every Highway target this machine runs (AVX2, SSE4, ... and AVX-512 where
// present), not only the one dispatch picks: each target is its own compiled code, with its own
// vector width and tails. Against double-precision loops on fresh random inputs; tolerances are
// relative to the sum of |terms| (float accumulation over <= ~1000 terms stays well under 1e-5).
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "engine/backend/cpu/cpu_kernels.h"
#include "engine/backend/cpu/panel_kernels.h"
#include "gtest/gtest.h"
#include "hwy/targets.h"
#include "random_host_data.h"

namespace brickserve {
namespace {

using testing::RandomMatrix;
using testing::RandomVector;

constexpr double kRelTol = 1e-5;

// Runs fn once per target, with dispatch forced to it.
template <typename Fn>
void ForEachTarget(Fn&& fn) {
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    SCOPED_TRACE(hwy::TargetName(target));
    fn();
  }
  hwy::SetSupportedTargetsForTest(0);
}

// |got - dot| <= kRelTol * sum |terms| for x row r against weight row o.
void ExpectDot(float got, const float* x, const RandomMatrix& w, int64_t o, const std::string& where) {
  double dot = 0, mag = 0;
  for (int64_t k = 0; k < w.cols; ++k) {
    const double t = w.exact[o * w.cols + k] * x[k];
    dot += t;
    mag += std::fabs(t);
  }
  ASSERT_LE(std::fabs(got - dot), kRelTol * mag + 1e-30) << where << ": " << got << " vs " << dot;
}

TEST(CpuKernels, MatVecRowsMatchesReferenceAndIsBatchInvariantOnEveryTarget) {
  std::mt19937 rng(std::random_device{}());
  ForEachTarget([&] {
    for (DType t : {DType::kF32, DType::kF16, DType::kBF16}) {
      for (int64_t in : {1, 7, 16, 33, 72, 1031}) {
        const int64_t out = 37;
        const RandomMatrix w(t, out, in, rng);
        for (int rows : {1, 2, 3, 5, 9}) {
          const std::string where = std::string(DTypeName(t)) + " in " + std::to_string(in) + " rows " +
                                    std::to_string(rows);
          const std::vector<float> x = RandomVector(static_cast<size_t>(rows * in), rng);
          std::vector<float> y(static_cast<size_t>(rows * out));
          cpu::MatVecRows(x.data(), rows, in, w.data(), t, 0, out, y.data(), out);
          for (int r = 0; r < rows; ++r) {
            std::vector<float> alone(static_cast<size_t>(out));
            cpu::MatVecRows(x.data() + r * in, 1, in, w.data(), t, 0, out, alone.data(), out);
            for (int64_t o = 0; o < out; ++o) {
              ExpectDot(y[r * out + o], x.data() + r * in, w, o, where);
              ASSERT_EQ(alone[o], y[r * out + o]) << where << ": row " << r << " alone differs from the batch";
            }
          }
        }
      }
    }
  });
}

// Packed panels (F32, BF16): row counts around every row-group size (6 per tile on AVX2, 12 for
// F32 on AVX-512), `out` not a multiple of the 16-wide panels, panel ranges split as the thread
// pool splits them.
TEST(CpuKernels, PanelMatMulMatchesReferenceAndIsBatchInvariantOnEveryTarget) {
  std::mt19937 rng(std::random_device{}());
  ForEachTarget([&] {
    for (DType t : {DType::kF32, DType::kBF16}) {
      for (int64_t in : {1, 7, 33, 1031}) {
        for (int64_t out : {1, 16, 37, 70}) {
          const RandomMatrix w(t, out, in, rng);
          const int64_t panels = cpu::NumPanels(out);
          const cpu::PanelStorage packed = cpu::AllocatePanels(out, in, t);
          cpu::PackPanels(w.data(), t, out, in, 0, panels, packed.get());
          const int64_t stride = out + 3;  // columns past `out` must stay untouched
          for (int rows : {1, 2, 3, 5, 6, 7, 13, 17, 25}) {
            const std::string where = std::string(DTypeName(t)) + " in " + std::to_string(in) + " out " +
                                      std::to_string(out) + " rows " + std::to_string(rows);
            const std::vector<float> x = RandomVector(static_cast<size_t>(rows * in), rng);
            const float nan = std::numeric_limits<float>::quiet_NaN();
            std::vector<float> y(static_cast<size_t>(rows * stride), nan);
            cpu::PanelMatMul(x.data(), rows, in, packed.get(), t, out, 0, panels, y.data(), stride);
            std::vector<float> split(y.size(), nan);
            cpu::PanelMatMul(x.data(), rows, in, packed.get(), t, out, 0, panels / 2, split.data(), stride);
            cpu::PanelMatMul(x.data(), rows, in, packed.get(), t, out, panels / 2, panels, split.data(), stride);
            for (int r = 0; r < rows; ++r) {
              std::vector<float> alone(static_cast<size_t>(stride));
              cpu::PanelMatMul(x.data() + r * in, 1, in, packed.get(), t, out, 0, panels, alone.data(), stride);
              for (int64_t o = 0; o < out; ++o) {
                ExpectDot(y[r * stride + o], x.data() + r * in, w, o, where);
                ASSERT_EQ(alone[o], y[r * stride + o]) << where << ": row " << r << " alone differs from the batch";
                ASSERT_EQ(split[r * stride + o], y[r * stride + o]) << where << ": split panel range differs";
              }
              for (int64_t o = out; o < stride; ++o) {
                ASSERT_TRUE(std::isnan(y[r * stride + o])) << where << ": wrote past out";
              }
            }
          }
        }
      }
    }
  });
}

TEST(CpuKernels, MatVecGatheredMatchesReferenceOnEveryTarget) {
  std::mt19937 rng(std::random_device{}());
  ForEachTarget([&] {
    for (DType t : {DType::kF32, DType::kBF16}) {
      const int64_t in = 72, total = 50;
      const RandomMatrix w(t, total, in, rng);
      const std::vector<int32_t> ids = {49, 3, 3, 17, 0, 28, 41, 9, 33, 12, 48};
      const int n = static_cast<int>(ids.size());
      for (int rows : {1, 6}) {
        const std::vector<float> x = RandomVector(static_cast<size_t>(rows * in), rng);
        std::vector<const float*> xr;
        for (int r = 0; r < rows; ++r) xr.push_back(x.data() + r * in);
        std::vector<float> y(static_cast<size_t>(rows * n));
        cpu::MatVecGathered(xr.data(), rows, in, w.data(), t, ids.data(), n, y.data(), n);
        for (int r = 0; r < rows; ++r) {
          for (int i = 0; i < n; ++i) {
            ExpectDot(y[r * n + i], xr[r], w, ids[i], std::string(DTypeName(t)) + " rows " + std::to_string(rows));
          }
        }
      }
    }
  });
}

// K in the CPU cache's layout: transposed within each block (dim c of slot j at c * block_size + j).
// Block sizes narrower than, equal to and wider than a vector; the last block partly filled.
TEST(CpuKernels, AttendKvHeadMatchesReferenceOnEveryTarget) {
  std::mt19937 rng(std::random_device{}());
  ForEachTarget([&] {
    for (int block_size : {4, 16, 32}) {
      for (int head_dim : {37, 40, 64}) {
        for (int group : {1, 2, 3}) {
          const int kv_heads = 3, kvh = 1;
          const size_t kv_stride = static_cast<size_t>(kv_heads) * head_dim;
          const size_t n = 2 * block_size + 3 * block_size / 4;  // three blocks, the last one partly filled
          const std::vector<int32_t> table = {5, 0, 2};
          const size_t slots = 6 * block_size;
          const std::vector<float> k = RandomVector(slots * kv_stride, rng), v = RandomVector(slots * kv_stride, rng);
          const std::vector<float> q = RandomVector(static_cast<size_t>(group) * head_dim, rng);
          const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
          std::vector<float> scores(group * n), out(static_cast<size_t>(group) * head_dim, NAN);
          cpu::AttendKvHead(q.data(), group, head_dim, scale, k.data() + static_cast<size_t>(kvh) * head_dim * block_size,
                            v.data() + kvh * head_dim, kv_stride, table.data(), block_size, n, scores.data(), out.data());
          const std::string where = "block_size " + std::to_string(block_size) + " head_dim " +
                                    std::to_string(head_dim) + " group " + std::to_string(group);
          for (int g = 0; g < group; ++g) {
            std::vector<double> p(n);
            double mx = -INFINITY, sum = 0;
            for (size_t t = 0; t < n; ++t) {
              const size_t block = static_cast<size_t>(table[t / block_size]), j = t % block_size;
              double s = 0;
              for (int i = 0; i < head_dim; ++i) {
                s += double(q[g * head_dim + i]) * k[block * block_size * kv_stride + (kvh * head_dim + i) * block_size + j];
              }
              p[t] = s * scale;
              mx = std::max(mx, p[t]);
            }
            for (double& x : p) sum += x = std::exp(x - mx);
            for (int i = 0; i < head_dim; ++i) {
              double o = 0, mag = 0;
              for (size_t t = 0; t < n; ++t) {
                const size_t row = (static_cast<size_t>(table[t / block_size]) * block_size + t % block_size) * kv_stride +
                                   kvh * head_dim;
                o += p[t] / sum * v[row + i];
                mag += std::fabs(p[t] / sum * v[row + i]);
              }
              ASSERT_LE(std::fabs(out[g * head_dim + i] - o), kRelTol * (mag + 1.0))
                  << where << " head " << g << " column " << i;
            }
          }
        }
      }
    }
  });
}

}  // namespace
}  // namespace brickserve
