// Attention over the paged KV cache. Two kernels, both with an online softmax (no score matrix in
// memory): a row kernel (decode; in batch-invariant mode every row) and a tiled prefill kernel.
#include <algorithm>
#include <cmath>

#include "engine/backend/cuda/kernels/common.cuh"
#include "engine/backend/cuda/kernels/kernels.h"

namespace brickserve::cuda {
namespace {

constexpr int kRowWarps = 4;
constexpr int kMaxHeadDim = 256;
constexpr int kMaxGroup = 8;

__device__ __forceinline__ int64_t SlotOf(const int32_t* table, int block_size, int t) {
  return static_cast<int64_t>(table[t / block_size]) * block_size + t % block_size;
}

// One block per (query row, KV head) serves the GQA group's query heads from one read of each K/V
// row. Warp w takes positions w, w + 4, ...; lane holds dims lane + 32 i. The four warps' partial
// softmax states are merged in a fixed order, so the result depends only on the row's own data.
template <int kDims, int kGroup>
__global__ void __launch_bounds__(kRowWarps * kWarp) AttentionRowsKernel(AttentionArgs a, const AttentionRow* rows) {
  const AttentionRow item = rows[blockIdx.x];
  const int kvh = blockIdx.y;
  const int group = a.num_heads / a.num_kv_heads;
  const int hd = a.head_dim;
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int64_t q_dim = int64_t{a.num_heads} * hd, kv_dim = int64_t{a.num_kv_heads} * hd;
  const float* q0 = a.q + item.row * q_dim + int64_t{kvh} * group * hd;
  float q[kGroup][kDims], acc[kGroup][kDims], m[kGroup], l[kGroup];
#pragma unroll
  for (int g = 0; g < kGroup; ++g) {
    m[g] = -INFINITY;
    l[g] = 0.0f;
#pragma unroll
    for (int i = 0; i < kDims; ++i) {
      const int d = lane + kWarp * i;
      q[g][i] = (g < group && d < hd) ? q0[g * hd + d] : 0.0f;
      acc[g][i] = 0.0f;
    }
  }
  const int32_t* table = a.tables + item.table_offset;
  for (int t = warp; t < item.context; t += kRowWarps) {
    const int64_t base = SlotOf(table, a.block_size, t) * kv_dim + int64_t{kvh} * hd;
    float kv[kDims];
#pragma unroll
    for (int i = 0; i < kDims; ++i) {
      const int d = lane + kWarp * i;
      kv[i] = d < hd ? a.k_cache[base + d] : 0.0f;
    }
    float p[kGroup];
#pragma unroll
    for (int g = 0; g < kGroup; ++g) {
      float part = 0.0f;
#pragma unroll
      for (int i = 0; i < kDims; ++i) part += q[g][i] * kv[i];
      const float s = WarpSum(part) * a.scale;
      p[g] = 0.0f;
      if (g < group) {
        const float m_new = fmaxf(m[g], s);
        const float corr = expf(m[g] - m_new);  // 0 on the first position (m = -inf)
        p[g] = expf(s - m_new);
        l[g] = l[g] * corr + p[g];
        m[g] = m_new;
#pragma unroll
        for (int i = 0; i < kDims; ++i) acc[g][i] *= corr;
      }
    }
#pragma unroll
    for (int i = 0; i < kDims; ++i) {
      const int d = lane + kWarp * i;
      kv[i] = d < hd ? a.v_cache[base + d] : 0.0f;
    }
#pragma unroll
    for (int g = 0; g < kGroup; ++g) {
#pragma unroll
      for (int i = 0; i < kDims; ++i) acc[g][i] += p[g] * kv[i];
    }
  }
  __shared__ float sm_m[kRowWarps][kGroup], sm_l[kRowWarps][kGroup];
  __shared__ float sm_acc[kRowWarps][kGroup][kDims * kWarp];
#pragma unroll
  for (int g = 0; g < kGroup; ++g) {
    if (lane == 0) {
      sm_m[warp][g] = m[g];
      sm_l[warp][g] = l[g];
    }
#pragma unroll
    for (int i = 0; i < kDims; ++i) sm_acc[warp][g][lane + kWarp * i] = acc[g][i];
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < group * hd; idx += blockDim.x) {
    const int g = idx / hd, d = idx % hd;
    float mx = -INFINITY;
    for (int w = 0; w < kRowWarps; ++w) {
      if (sm_l[w][g] > 0.0f) mx = fmaxf(mx, sm_m[w][g]);
    }
    float sum = 0.0f, o = 0.0f;
    for (int w = 0; w < kRowWarps; ++w) {
      if (sm_l[w][g] > 0.0f) {
        const float f = expf(sm_m[w][g] - mx);
        sum += sm_l[w][g] * f;
        o += sm_acc[w][g][d] * f;
      }
    }
    a.out[item.row * q_dim + (int64_t{kvh} * group + g) * hd + d] = o / sum;
  }
}

template <int kDims>
cudaError_t LaunchRowsForGroup(const AttentionArgs& a, const AttentionRow* rows, int n_rows, cudaStream_t s) {
  const dim3 grid(static_cast<unsigned>(n_rows), static_cast<unsigned>(a.num_kv_heads));
  const int group = a.num_heads / a.num_kv_heads;
  if (group <= 1) {
    AttentionRowsKernel<kDims, 1><<<grid, kRowWarps * kWarp, 0, s>>>(a, rows);
  } else if (group <= 2) {
    AttentionRowsKernel<kDims, 2><<<grid, kRowWarps * kWarp, 0, s>>>(a, rows);
  } else if (group <= 4) {
    AttentionRowsKernel<kDims, 4><<<grid, kRowWarps * kWarp, 0, s>>>(a, rows);
  } else {
    AttentionRowsKernel<kDims, kMaxGroup><<<grid, kRowWarps * kWarp, 0, s>>>(a, rows);
  }
  return cudaGetLastError();
}

// --- prefill: a tile of kTileQ queries of one head against tiles of kTileK keys ---
constexpr int kTileQ = 16;
constexpr int kTileK = 32;
constexpr int kPrefillThreads = 128;

size_t PrefillSharedBytes(int hd) {
  // Q [kTileQ][hd], K [kTileK][hd + 1] (padded: threads of a warp read different keys' same dim),
  // V [kTileK][hd], O [kTileQ][hd], S [kTileQ][kTileK], m, l, corr [kTileQ].
  return sizeof(float) * (size_t{kTileQ} * hd + size_t{kTileK} * (hd + 1) + size_t{kTileK} * hd +
                          size_t{kTileQ} * hd + kTileQ * kTileK + 3 * kTileQ);
}

__global__ void __launch_bounds__(kPrefillThreads)
    AttentionPrefillKernel(AttentionArgs a, int q_begin, int q_len, int context, const int32_t* table) {
  extern __shared__ float smem[];
  const int hd = a.head_dim;
  float* Qs = smem;
  float* Ks = Qs + kTileQ * hd;
  float* Vs = Ks + kTileK * (hd + 1);
  float* Os = Vs + kTileK * hd;
  float* S = Os + kTileQ * hd;
  float* m = S + kTileQ * kTileK;
  float* l = m + kTileQ;
  float* corr = l + kTileQ;
  const int head = blockIdx.y;
  const int kvh = head / (a.num_heads / a.num_kv_heads);
  const int i0 = blockIdx.x * kTileQ;  // first query of the tile, within the chunk
  const int first_pos = context - q_len;
  const int64_t q_dim = int64_t{a.num_heads} * hd, kv_dim = int64_t{a.num_kv_heads} * hd;
  for (int idx = threadIdx.x; idx < kTileQ * hd; idx += blockDim.x) {
    const int i = idx / hd, d = idx % hd;
    Qs[idx] = i0 + i < q_len ? a.q[(q_begin + i0 + i) * q_dim + int64_t{head} * hd + d] : 0.0f;
    Os[idx] = 0.0f;
  }
  if (threadIdx.x < kTileQ) {
    m[threadIdx.x] = -INFINITY;
    l[threadIdx.x] = 0.0f;
  }
  // Keys past the tile's last query position are masked for every row: stop there.
  const int last_row = min(i0 + kTileQ, q_len) - 1;
  const int key_end = first_pos + last_row + 1;
  for (int k0 = 0; k0 < key_end; k0 += kTileK) {
    __syncthreads();
    for (int idx = threadIdx.x; idx < kTileK * hd; idx += blockDim.x) {
      const int j = idx / hd, d = idx % hd;
      const int t = k0 + j;
      float kv = 0.0f, vv = 0.0f;
      if (t < key_end) {
        const int64_t base = SlotOf(table, a.block_size, t) * kv_dim + int64_t{kvh} * hd;
        kv = a.k_cache[base + d];
        vv = a.v_cache[base + d];
      }
      Ks[j * (hd + 1) + d] = kv;
      Vs[j * hd + d] = vv;
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < kTileQ * kTileK; idx += blockDim.x) {
      const int i = idx / kTileK, j = idx % kTileK;
      const int pos = first_pos + i0 + i;
      float s = -INFINITY;
      if (i0 + i < q_len && k0 + j <= pos) {
        float dot = 0.0f;
        for (int d = 0; d < hd; ++d) dot += Qs[i * hd + d] * Ks[j * (hd + 1) + d];
        s = dot * a.scale;
      }
      S[idx] = s;
    }
    __syncthreads();
    if (threadIdx.x < kTileQ) {
      const int i = threadIdx.x;
      float mx = m[i];
      for (int j = 0; j < kTileK; ++j) mx = fmaxf(mx, S[i * kTileK + j]);
      if (mx == -INFINITY) {  // nothing visible yet for this row
        corr[i] = 1.0f;
      } else {
        float sum = 0.0f;
        for (int j = 0; j < kTileK; ++j) {
          const float p = expf(S[i * kTileK + j] - mx);
          S[i * kTileK + j] = p;
          sum += p;
        }
        corr[i] = expf(m[i] - mx);
        l[i] = l[i] * corr[i] + sum;
        m[i] = mx;
      }
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < kTileQ * hd; idx += blockDim.x) {
      const int i = idx / hd, d = idx % hd;
      if (m[i] == -INFINITY) continue;
      float o = Os[idx] * corr[i];
      for (int j = 0; j < kTileK; ++j) o += S[i * kTileK + j] * Vs[j * hd + d];
      Os[idx] = o;
    }
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < kTileQ * hd; idx += blockDim.x) {
    const int i = idx / hd, d = idx % hd;
    if (i0 + i < q_len) a.out[(q_begin + i0 + i) * q_dim + int64_t{head} * hd + d] = Os[idx] / l[i];
  }
}

}  // namespace

bool AttentionSupported(int head_dim, int group) {
  return head_dim > 0 && head_dim % 2 == 0 && head_dim <= kMaxHeadDim && group >= 1 && group <= kMaxGroup;
}

cudaError_t AttentionRows(const AttentionArgs& a, const AttentionRow* rows, int n_rows, cudaStream_t s) {
  if (n_rows == 0) return cudaSuccess;
  if (!AttentionSupported(a.head_dim, a.num_heads / a.num_kv_heads)) return cudaErrorInvalidValue;
  if (a.head_dim <= 64) return LaunchRowsForGroup<2>(a, rows, n_rows, s);
  if (a.head_dim <= 128) return LaunchRowsForGroup<4>(a, rows, n_rows, s);
  return LaunchRowsForGroup<8>(a, rows, n_rows, s);
}

cudaError_t AttentionPrefill(const AttentionArgs& a, int q_begin, int q_len, int context, const int32_t* table,
                             cudaStream_t s) {
  if (q_len == 0) return cudaSuccess;
  if (!AttentionSupported(a.head_dim, a.num_heads / a.num_kv_heads)) return cudaErrorInvalidValue;
  const size_t smem = PrefillSharedBytes(a.head_dim);
  // Above 48 KiB a kernel must opt in to more shared memory (Ampere: up to 163 KiB, Hopper 227).
  cudaError_t e = cudaFuncSetAttribute(AttentionPrefillKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(smem));
  if (e != cudaSuccess) return e;
  const dim3 grid(static_cast<unsigned>((q_len + kTileQ - 1) / kTileQ), static_cast<unsigned>(a.num_heads));
  AttentionPrefillKernel<<<grid, kPrefillThreads, smem, s>>>(a, q_begin, q_len, context, table);
  return cudaGetLastError();
}

}  // namespace brickserve::cuda
