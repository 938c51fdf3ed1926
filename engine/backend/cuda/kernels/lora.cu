// LoRA for a mixed batch in two launches per projection (the SGMV/BGMV shape of Punica and
// S-LoRA): shrink every (segment, row) to its rank-wide product, then expand into y row by row.
#include <algorithm>

#include "engine/backend/cuda/kernels/common.cuh"
#include "engine/backend/cuda/kernels/kernels.h"

namespace brickserve::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / kWarp;

// grid.y = segment; warps of grid.x take the segment's (row, rank index) pairs.
__global__ void ShrinkKernel(const float* x, int64_t in, const LoraSegmentArgs* segs, const int32_t* rows,
                             const float* row_weights, float* t) {
  const LoraSegmentArgs seg = segs[blockIdx.y];
  const int lane = threadIdx.x % kWarp;
  const int items = seg.count * seg.rank;
  const bool vec = in % 8 == 0 && Aligned16(seg.a) && Aligned16(x);
  for (int it = blockIdx.x * kWarpsPerBlock + threadIdx.x / kWarp; it < items; it += gridDim.x * kWarpsPerBlock) {
    const int i = it / seg.rank, j = it % seg.rank;
    const int32_t row = rows[seg.rows_begin + i];
    const float* xr = x + int64_t{row} * in;
    float dot;
    const void* a_row =
        static_cast<const char*>(seg.a) + int64_t{j} * in * static_cast<int64_t>(DTypeSize(seg.a_dtype));
    switch (seg.a_dtype) {
      case DType::kBF16: dot = WarpDot<DType::kBF16>(a_row, xr, in, vec); break;
      case DType::kF16: dot = WarpDot<DType::kF16>(a_row, xr, in, vec); break;
      default: dot = WarpDot<DType::kF32>(a_row, xr, in, vec); break;
    }
    if (lane == 0) t[seg.t_offset + it] = dot * (seg.scale * row_weights[seg.rows_begin + i]);
  }
}

__device__ __forceinline__ float LoadAny(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::kBF16: return LoadOne<DType::kBF16>(p, i);
    case DType::kF16: return LoadOne<DType::kF16>(p, i);
    default: return LoadOne<DType::kF32>(p, i);
  }
}

// grid.y = output row; a thread per column applies the row's entries in segment order.
__global__ void ExpandKernel(const float* t, const LoraSegmentArgs* segs, const int32_t* out_rows, int n_out_rows,
                             const int32_t* entry_begin, const LoraEntry* entries, int64_t out, float* y) {
  for (int r = blockIdx.y; r < n_out_rows; r += gridDim.y) {
    float* yr = y + int64_t{out_rows[r]} * out;
    for (int64_t o = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; o < out; o += int64_t{gridDim.x} * blockDim.x) {
      float v = yr[o];
      for (int e = entry_begin[r]; e < entry_begin[r + 1]; ++e) {
        const LoraSegmentArgs& seg = segs[entries[e].segment];
        const float* te = t + entries[e].t_offset;
        float acc = 0.0f;
        for (int j = 0; j < seg.rank; ++j) acc += te[j] * LoadAny(seg.b, seg.b_dtype, int64_t{j} * out + o);
        v += acc;
      }
      yr[o] = v;
    }
  }
}

}  // namespace

cudaError_t LoraShrink(const float* x, int64_t in, const LoraSegmentArgs* segs, int n_segs, int max_items,
                       const int32_t* rows, const float* row_weights, float* t, cudaStream_t s) {
  if (n_segs == 0 || max_items == 0) return cudaSuccess;
  const unsigned bx = static_cast<unsigned>(std::min((max_items + kWarpsPerBlock - 1) / kWarpsPerBlock, 1024));
  ShrinkKernel<<<dim3(bx, static_cast<unsigned>(n_segs)), kThreads, 0, s>>>(x, in, segs, rows, row_weights, t);
  return cudaGetLastError();
}

cudaError_t LoraExpand(const float* t, const LoraSegmentArgs* segs, const int32_t* out_rows, int n_out_rows,
                       const int32_t* entry_begin, const LoraEntry* entries, int64_t out, float* y, cudaStream_t s) {
  if (n_out_rows == 0) return cudaSuccess;
  const unsigned bx = static_cast<unsigned>(std::min<int64_t>((out + kThreads - 1) / kThreads, 64));
  const unsigned by = std::min(static_cast<unsigned>(n_out_rows), kMaxGridY);
  ExpandKernel<<<dim3(bx, by), kThreads, 0, s>>>(t, segs, out_rows, n_out_rows, entry_begin, entries, out, y);
  return cudaGetLastError();
}

}  // namespace brickserve::cuda
