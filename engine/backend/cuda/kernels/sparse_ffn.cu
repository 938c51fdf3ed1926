// The sparse FFN of emergent modules as two gather kernels: the chosen neurons' activations per
// (group, row), then per output row the sum of their down-projection rows, in the groups' order.
#include <algorithm>

#include "engine/backend/cuda/kernels/common.cuh"
#include "engine/backend/cuda/kernels/kernels.h"

namespace brickserve::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / kWarp;

// grid.y = group; warps of grid.x take the group's (row, neuron) pairs: two dot products each.
template <DType T>
__global__ void ActivationsKernel(const float* x, int64_t hidden, const void* gate, const void* up,
                                  const FfnGroupArgs* groups, const int32_t* neurons, const int32_t* rows, float* act,
                                  bool vec) {
  const FfnGroupArgs g = groups[blockIdx.y];
  const int lane = threadIdx.x % kWarp;
  const int items = g.n_rows * g.n_neurons;
  const int64_t row_bytes = hidden * static_cast<int64_t>(DTypeSize(T));
  for (int it = blockIdx.x * kWarpsPerBlock + threadIdx.x / kWarp; it < items; it += gridDim.x * kWarpsPerBlock) {
    const int i = it / g.n_neurons, j = it % g.n_neurons;
    const float* xr = x + int64_t{rows[g.rows_begin + i]} * hidden;
    const int64_t n = neurons[g.neurons_begin + j];
    const float gv = WarpDot<T>(static_cast<const char*>(gate) + n * row_bytes, xr, hidden, vec);
    const float uv = WarpDot<T>(static_cast<const char*>(up) + n * row_bytes, xr, hidden, vec);
    if (lane == 0) act[g.act_offset + it] = Silu(gv) * uv;
  }
}

template <DType T>
__global__ void DownKernel(const float* act, const void* down_t, int64_t hidden, const FfnGroupArgs* groups,
                           const int32_t* neurons, const int32_t* out_rows, int n_out_rows, const int32_t* entry_begin,
                           const FfnEntry* entries, float* out) {
  for (int r = blockIdx.y; r < n_out_rows; r += gridDim.y) {
    float* yr = out + int64_t{out_rows[r]} * hidden;
    for (int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; c < hidden; c += int64_t{gridDim.x} * blockDim.x) {
      float acc = 0.0f;
      for (int e = entry_begin[r]; e < entry_begin[r + 1]; ++e) {
        const FfnGroupArgs g = groups[entries[e].group];
        const float* a = act + g.act_offset + int64_t{entries[e].row_index} * g.n_neurons;
        for (int j = 0; j < g.n_neurons; ++j) {
          acc += a[j] * LoadOne<T>(down_t, int64_t{neurons[g.neurons_begin + j]} * hidden + c);
        }
      }
      yr[c] = acc;
    }
  }
}

}  // namespace

cudaError_t SparseFfnActivations(const float* x, int64_t hidden, const void* gate, const void* up, DType dtype,
                                 const FfnGroupArgs* groups, int n_groups, int max_items, const int32_t* neurons,
                                 const int32_t* rows, float* act, cudaStream_t s) {
  if (n_groups == 0 || max_items == 0) return cudaSuccess;
  const bool vec = hidden % 8 == 0 && Aligned16(x) && Aligned16(gate) && Aligned16(up);
  const unsigned bx = static_cast<unsigned>(std::min((max_items + kWarpsPerBlock - 1) / kWarpsPerBlock, 1024));
  return DispatchDType(dtype, [&](auto tag) {
    constexpr DType T = decltype(tag)::value;
    ActivationsKernel<T><<<dim3(bx, static_cast<unsigned>(n_groups)), kThreads, 0, s>>>(x, hidden, gate, up, groups,
                                                                                      neurons, rows, act, vec);
    return cudaGetLastError();
  });
}

cudaError_t SparseFfnDown(const float* act, const void* down_t, DType dtype, int64_t hidden, const FfnGroupArgs* groups,
                          const int32_t* neurons, const int32_t* out_rows, int n_out_rows, const int32_t* entry_begin,
                          const FfnEntry* entries, float* out, cudaStream_t s) {
  if (n_out_rows == 0) return cudaSuccess;
  const unsigned bx = static_cast<unsigned>(std::min<int64_t>((hidden + kThreads - 1) / kThreads, 64));
  return DispatchDType(dtype, [&](auto tag) {
    constexpr DType T = decltype(tag)::value;
    const unsigned by = std::min(static_cast<unsigned>(n_out_rows), kMaxGridY);
    DownKernel<T><<<dim3(bx, by), kThreads, 0, s>>>(act, down_t, hidden, groups, neurons, out_rows, n_out_rows,
                                                    entry_begin, entries, out);
    return cudaGetLastError();
  });
}

}  // namespace brickserve::cuda
