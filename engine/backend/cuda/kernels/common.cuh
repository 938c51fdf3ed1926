// Device-side helpers shared by the CUDA kernels: weight element loads per dtype, warp/block sums.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "engine/backend/dtype.h"

namespace brickserve::cuda {

constexpr int kWarp = 32;
constexpr unsigned kMaxGridY = 65535;  // kernels with one row per grid.y loop beyond it

__device__ __forceinline__ float Bf16Bits(uint16_t b) { return __uint_as_float(static_cast<uint32_t>(b) << 16); }
__device__ __forceinline__ float F16Bits(uint16_t h) { return __half2float(__ushort_as_half(h)); }

// One element of a weight in dtype T, widened to float.
template <DType T>
__device__ __forceinline__ float LoadOne(const void* base, int64_t i) {
  if constexpr (T == DType::kF32) {
    return __ldg(static_cast<const float*>(base) + i);
  } else if constexpr (T == DType::kBF16) {
    return Bf16Bits(__ldg(static_cast<const unsigned short*>(base) + i));
  } else {
    return F16Bits(__ldg(static_cast<const unsigned short*>(base) + i));
  }
}

// Eight consecutive elements starting at i (i a multiple of 8, base 16-byte aligned).
template <DType T>
__device__ __forceinline__ void LoadEight(const void* base, int64_t i, float out[8]) {
  if constexpr (T == DType::kF32) {
    const float4* p = reinterpret_cast<const float4*>(static_cast<const float*>(base) + i);
    const float4 a = __ldg(p), b = __ldg(p + 1);
    out[0] = a.x; out[1] = a.y; out[2] = a.z; out[3] = a.w;
    out[4] = b.x; out[5] = b.y; out[6] = b.z; out[7] = b.w;
  } else {
    const uint4 v = __ldg(reinterpret_cast<const uint4*>(static_cast<const unsigned short*>(base) + i));
    const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const uint16_t lo = static_cast<uint16_t>(words[j] & 0xffffu), hi = static_cast<uint16_t>(words[j] >> 16);
      if constexpr (T == DType::kBF16) {
        out[2 * j] = Bf16Bits(lo);
        out[2 * j + 1] = Bf16Bits(hi);
      } else {
        out[2 * j] = F16Bits(lo);
        out[2 * j + 1] = F16Bits(hi);
      }
    }
  }
}

// Sum over the warp; every lane gets the result. The butterfly order is fixed, so the result does
// not depend on anything but the 32 inputs.
__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Dot product of a weight row (dtype T, `n` elements) with an F32 vector, by one warp; every lane
// gets the result. `vec` selects 8-wide loads (n % 8 == 0, both rows 16-byte aligned).
template <DType T>
__device__ __forceinline__ float WarpDot(const void* w_row, const float* __restrict__ x, int64_t n, bool vec) {
  const int lane = threadIdx.x % kWarp;
  float acc = 0.0f;
  if (vec) {
    for (int64_t k = int64_t{lane} * 8; k < n; k += kWarp * 8) {
      float w[8];
      LoadEight<T>(w_row, k, w);
      const float4 a = __ldg(reinterpret_cast<const float4*>(x + k));
      const float4 b = __ldg(reinterpret_cast<const float4*>(x + k + 4));
      acc += w[0] * a.x + w[1] * a.y + w[2] * a.z + w[3] * a.w + w[4] * b.x + w[5] * b.y + w[6] * b.z + w[7] * b.w;
    }
  } else {
    for (int64_t k = lane; k < n; k += kWarp) acc += LoadOne<T>(w_row, k) * __ldg(x + k);
  }
  return WarpSum(acc);
}

template <DType T>
using DTypeTag = std::integral_constant<DType, T>;

// Calls fn(DTypeTag<T>{}) with the dtype as a compile-time constant (decltype(tag)::value).
template <typename Fn>
__host__ cudaError_t DispatchDType(DType t, Fn&& fn) {
  switch (t) {
    case DType::kF32: return fn(DTypeTag<DType::kF32>{});
    case DType::kBF16: return fn(DTypeTag<DType::kBF16>{});
    case DType::kF16: return fn(DTypeTag<DType::kF16>{});
    default: return cudaErrorInvalidValue;
  }
}

__host__ __device__ inline bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

__device__ __forceinline__ float Silu(float g) { return g / (1.0f + expf(-g)); }

}  // namespace brickserve::cuda
