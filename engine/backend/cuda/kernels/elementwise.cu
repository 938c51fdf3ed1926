// Small kernels of a Llama block: embedding lookup, RMSNorm, RoPE, KV writes, SwiGLU, adds.
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "engine/backend/cuda/kernels/common.cuh"
#include "engine/backend/cuda/kernels/kernels.h"

namespace brickserve::cuda {
namespace {

constexpr int kThreads = 256;

unsigned Blocks(size_t n, int per_block = kThreads) {
  const size_t b = (n + per_block - 1) / per_block;
  return static_cast<unsigned>(b < 1 ? 1 : (b > (1u << 30) ? (1u << 30) : b));
}

template <DType T>
__global__ void EmbedKernel(const void* table, int64_t dim, const int32_t* ids, int n, float* out) {
  for (int64_t row = blockIdx.y; row < n; row += gridDim.y) {
    const void* src = static_cast<const char*>(table) + ids[row] * dim * static_cast<int64_t>(DTypeSize(T));
    for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < dim; i += int64_t{gridDim.x} * blockDim.x) {
      out[row * dim + i] = LoadOne<T>(src, i);
    }
  }
}

// One block per row. The sum of squares is in double, like the CPU reference.
__global__ void RmsNormKernel(const float* x, const float* w, int64_t dim, float eps, float* out) {
  __shared__ double partial[kThreads / kWarp];
  const float* xr = x + blockIdx.x * dim;
  double ss = 0;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) ss += static_cast<double>(xr[i]) * xr[i];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  if (threadIdx.x % kWarp == 0) partial[threadIdx.x / kWarp] = ss;
  __syncthreads();
  double total = 0;
  for (int i = 0; i < kThreads / kWarp; ++i) total += partial[i];
  const float inv = static_cast<float>(1.0 / sqrt(total / dim + eps));
  float* yr = out + blockIdx.x * dim;  // may alias x: each element is read before it is written
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) yr[i] = xr[i] * inv * w[i];
}

// One block per row: the row's cos/sin computed once in shared memory (angle in double: float32
// loses ~pos·1e-7 rad, visible at long positions), then applied to every head.
__global__ void RopeKernel(float* x, int heads, int head_dim, const int32_t* positions, const float* inv_freq) {
  extern __shared__ float cs_sn[];
  const int half = head_dim / 2;
  float* cs = cs_sn;
  float* sn = cs_sn + half;
  const double pos = positions[blockIdx.x];
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    const double angle = pos * static_cast<double>(inv_freq[i]);
    cs[i] = static_cast<float>(cos(angle));
    sn[i] = static_cast<float>(sin(angle));
  }
  __syncthreads();
  float* row = x + static_cast<int64_t>(blockIdx.x) * heads * head_dim;
  for (int idx = threadIdx.x; idx < heads * half; idx += blockDim.x) {
    const int h = idx / half, i = idx % half;
    float* v = row + h * head_dim;
    const float a = v[i], b = v[i + half];
    v[i] = a * cs[i] - b * sn[i];
    v[i + half] = b * cs[i] + a * sn[i];
  }
}

__global__ void WriteKvKernel(float* k_cache, float* v_cache, const float* k, const float* v, const int32_t* slots,
                              int n, int64_t kv_dim) {
  for (int64_t i = blockIdx.y; i < n; i += gridDim.y) {
    const int64_t dst = static_cast<int64_t>(slots[i]) * kv_dim;
    for (int64_t j = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; j < kv_dim; j += int64_t{gridDim.x} * blockDim.x) {
      k_cache[dst + j] = k[i * kv_dim + j];
      v_cache[dst + j] = v[i * kv_dim + j];
    }
  }
}

__global__ void SwiGluKernel(const float* gate, const float* up, size_t n, float* out) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n; i += size_t{gridDim.x} * blockDim.x) {
    out[i] = Silu(gate[i]) * up[i];
  }
}

__global__ void AddKernel(float* x, const float* y, size_t n) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n; i += size_t{gridDim.x} * blockDim.x) {
    x[i] += y[i];
  }
}

__global__ void AddBiasKernel(float* y, const float* bias, int64_t cols, size_t n) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n; i += size_t{gridDim.x} * blockDim.x) {
    y[i] += bias[i % cols];
  }
}

template <typename H>
__global__ void ConvertKernel(const float* x, size_t n, H* out) {
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < n; i += size_t{gridDim.x} * blockDim.x) {
    if constexpr (sizeof(H) == 2 && std::is_same_v<H, __nv_bfloat16>) {
      out[i] = __float2bfloat16_rn(x[i]);
    } else {
      out[i] = __float2half_rn(x[i]);
    }
  }
}

// Grid-stride kernels need no more blocks than this to fill any current GPU.
constexpr unsigned kMaxBlocks = 4096;
unsigned GridFor(size_t n) { return std::min(Blocks(n), kMaxBlocks); }

}  // namespace

cudaError_t Embed(const void* table, DType dtype, int64_t dim, const int32_t* ids, int n, float* out, cudaStream_t s) {
  if (n == 0) return cudaSuccess;
  const dim3 grid(std::min(Blocks(static_cast<size_t>(dim)), 8u), std::min(static_cast<unsigned>(n), kMaxGridY));
  return DispatchDType(dtype, [&](auto tag) {
    constexpr DType T = decltype(tag)::value;
    EmbedKernel<T><<<grid, kThreads, 0, s>>>(table, dim, ids, n, out);
    return cudaGetLastError();
  });
}

cudaError_t RmsNorm(const float* x, const float* weight, int rows, int64_t dim, float eps, float* out, cudaStream_t s) {
  if (rows == 0) return cudaSuccess;
  RmsNormKernel<<<rows, kThreads, 0, s>>>(x, weight, dim, eps, out);
  return cudaGetLastError();
}

cudaError_t Rope(float* x, int rows, int heads, int head_dim, const int32_t* positions, const float* inv_freq,
                 cudaStream_t s) {
  if (rows == 0) return cudaSuccess;
  RopeKernel<<<rows, 128, sizeof(float) * head_dim, s>>>(x, heads, head_dim, positions, inv_freq);
  return cudaGetLastError();
}

cudaError_t WriteKv(float* k_cache, float* v_cache, const float* k, const float* v, const int32_t* slots, int n,
                    int64_t kv_dim, cudaStream_t s) {
  if (n == 0) return cudaSuccess;
  const dim3 grid(std::min(Blocks(static_cast<size_t>(kv_dim)), 8u), std::min(static_cast<unsigned>(n), kMaxGridY));
  WriteKvKernel<<<grid, kThreads, 0, s>>>(k_cache, v_cache, k, v, slots, n, kv_dim);
  return cudaGetLastError();
}

cudaError_t SwiGlu(const float* gate, const float* up, size_t n, float* out, cudaStream_t s) {
  if (n == 0) return cudaSuccess;
  SwiGluKernel<<<GridFor(n), kThreads, 0, s>>>(gate, up, n, out);
  return cudaGetLastError();
}

cudaError_t Add(float* x, const float* y, size_t n, cudaStream_t s) {
  if (n == 0) return cudaSuccess;
  AddKernel<<<GridFor(n), kThreads, 0, s>>>(x, y, n);
  return cudaGetLastError();
}

cudaError_t AddBias(float* y, const float* bias, int rows, int64_t cols, cudaStream_t s) {
  const size_t n = static_cast<size_t>(rows) * cols;
  if (n == 0) return cudaSuccess;
  AddBiasKernel<<<GridFor(n), kThreads, 0, s>>>(y, bias, cols, n);
  return cudaGetLastError();
}

cudaError_t ConvertF32(const float* x, size_t n, DType to, void* out, cudaStream_t s) {
  if (n == 0) return cudaSuccess;
  if (to == DType::kBF16) {
    ConvertKernel<<<GridFor(n), kThreads, 0, s>>>(x, n, static_cast<__nv_bfloat16*>(out));
  } else if (to == DType::kF16) {
    ConvertKernel<<<GridFor(n), kThreads, 0, s>>>(x, n, static_cast<__half*>(out));
  } else {
    return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace brickserve::cuda
