// Matrix products for few rows (decode): weight-streaming, one warp per output feature.
#include <algorithm>

#include "engine/backend/cuda/kernels/common.cuh"
#include "engine/backend/cuda/kernels/kernels.h"

namespace brickserve::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxRows = 16;  // rows handled per pass: each weight row is read once for all of them

// Each warp takes output features o = warp, warp + warps, ...; per feature it streams the weight
// row once and accumulates R dot products. Row r's sum depends only on x[r] and w: the lane split
// and the butterfly are the same for every R, so the result is batch invariant.
template <DType T, int R>
__global__ void MatVecKernel(const float* __restrict__ x, const void* __restrict__ w, int64_t out_dim, int64_t in,
                             const float* __restrict__ bias, float* __restrict__ y, bool vec) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = int64_t{gridDim.x} * (blockDim.x / kWarp);
  const size_t elem = DTypeSize(T);
  for (int64_t o = int64_t{blockIdx.x} * (blockDim.x / kWarp) + threadIdx.x / kWarp; o < out_dim; o += warps) {
    const void* w_row = static_cast<const char*>(w) + o * in * static_cast<int64_t>(elem);
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = 0.0f;
    if (vec) {
#pragma unroll 2
      for (int64_t k = int64_t{lane} * 8; k < in; k += kWarp * 8) {
        float wv[8];
        LoadEight<T>(w_row, k, wv);
#pragma unroll
        for (int r = 0; r < R; ++r) {
          const float4 a = __ldg(reinterpret_cast<const float4*>(x + r * in + k));
          const float4 b = __ldg(reinterpret_cast<const float4*>(x + r * in + k + 4));
          acc[r] += wv[0] * a.x + wv[1] * a.y + wv[2] * a.z + wv[3] * a.w + wv[4] * b.x + wv[5] * b.y +
                    wv[6] * b.z + wv[7] * b.w;
        }
      }
    } else {
      for (int64_t k = lane; k < in; k += kWarp) {
        const float wv = LoadOne<T>(w_row, k);
#pragma unroll
        for (int r = 0; r < R; ++r) acc[r] += wv * __ldg(x + r * in + k);
      }
    }
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = WarpSum(acc[r]);
    if (lane == 0) {
      const float b = bias != nullptr ? bias[o] : 0.0f;
#pragma unroll
      for (int r = 0; r < R; ++r) y[r * out_dim + o] = acc[r] + b;
    }
  }
}

template <DType T>
cudaError_t LaunchRows(int n, const float* x, const void* w, int64_t out_dim, int64_t in, const float* bias,
                       float* y, bool vec, cudaStream_t s) {
  const int64_t warps_per_block = kThreads / kWarp;
  const unsigned blocks =
      static_cast<unsigned>(std::min<int64_t>((out_dim + warps_per_block - 1) / warps_per_block, 65535));
  switch (n) {
#define BS_MATVEC_CASE(R) \
  case R: MatVecKernel<T, R><<<blocks, kThreads, 0, s>>>(x, w, out_dim, in, bias, y, vec); break;
    BS_MATVEC_CASE(1)
    BS_MATVEC_CASE(2)
    BS_MATVEC_CASE(3)
    BS_MATVEC_CASE(4)
    BS_MATVEC_CASE(5)
    BS_MATVEC_CASE(6)
    BS_MATVEC_CASE(7)
    BS_MATVEC_CASE(8)
    BS_MATVEC_CASE(9)
    BS_MATVEC_CASE(10)
    BS_MATVEC_CASE(11)
    BS_MATVEC_CASE(12)
    BS_MATVEC_CASE(13)
    BS_MATVEC_CASE(14)
    BS_MATVEC_CASE(15)
    BS_MATVEC_CASE(16)
#undef BS_MATVEC_CASE
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t MatVec(const float* x, int rows, const void* w, DType dtype, int64_t out_dim, int64_t in_dim,
                   const float* bias, float* y, cudaStream_t s) {
  const bool vec = in_dim % 8 == 0 && Aligned16(x) && Aligned16(w);
  for (int r0 = 0; r0 < rows; r0 += kMaxRows) {
    const int n = std::min(kMaxRows, rows - r0);
    const float* xr = x + static_cast<int64_t>(r0) * in_dim;
    float* yr = y + static_cast<int64_t>(r0) * out_dim;
    const cudaError_t e = DispatchDType(dtype, [&](auto tag) {
      constexpr DType T = decltype(tag)::value;
      return LaunchRows<T>(n, xr, w, out_dim, in_dim, bias, yr, vec, s);
    });
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

}  // namespace brickserve::cuda
