// Sampling on the GPU: one thread block per row applies the penalties, temperature, top-k, top-p
// and min-p and draws with the host's uniform, with the host Sampler's exact semantics. Every
// token gets a unique 64-bit key (logit order, then lower id first, the Sampler's sort order); each
// cut is then "key >= threshold", found by bisection over the keys, so nothing is sorted.
#include <cfloat>

#include "engine/backend/cuda/kernels/common.cuh"
#include "engine/backend/cuda/kernels/kernels.h"

namespace brickserve::cuda {
namespace {

constexpr int kThreads = 512;

__device__ __forceinline__ uint64_t SortKey(float v, int32_t id) {
  const uint32_t b = __float_as_uint(v);
  const uint32_t ordered = (b & 0x80000000u) ? ~b : (b | 0x80000000u);  // float order as unsigned order
  return (static_cast<uint64_t>(ordered) << 32) | (0xFFFFFFFFu - static_cast<uint32_t>(id));
}
__device__ __forceinline__ int32_t IdOfKey(uint64_t key) {
  return static_cast<int32_t>(0xFFFFFFFFu - static_cast<uint32_t>(key));
}

// Block-wide reductions (every thread gets the result). `scratch` holds one value per warp.
template <typename T, typename Op>
__device__ T BlockReduce(T v, T* scratch, Op op) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();  // scratch may still be read by the previous reduction
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  T r = scratch[0];
  for (int w = 1; w < kThreads / kWarp; ++w) r = op(r, scratch[w]);
  return r;
}

struct Sum {
  template <typename T>
  __device__ T operator()(T a, T b) const { return a + b; }
};
struct Max {
  template <typename T>
  __device__ T operator()(T a, T b) const { return a > b ? a : b; }
};
struct Min {
  template <typename T>
  __device__ T operator()(T a, T b) const { return a < b ? a : b; }
};

// The largest T in [lo, hi] with pred(T), given pred(lo) holds and pred is monotone (true, then
// false as T grows). Every thread runs the same iterations (pred is a block-wide reduction).
template <typename Pred>
__device__ uint64_t LargestWhere(uint64_t lo, uint64_t hi, Pred pred) {
  while (lo < hi) {
    const uint64_t mid = lo + (hi - lo) / 2 + 1;
    if (pred(mid)) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

__global__ void __launch_bounds__(kThreads)
    SampleKernel(float* logits, int vocab, const SampleRowArgs* rows, const PenaltyArgs* penalties, double* probs,
                 int32_t* ids) {
  __shared__ double d_scratch[kThreads / kWarp];
  __shared__ unsigned long long u_scratch[kThreads / kWarp];
  __shared__ float f_scratch[kThreads / kWarp];
  const SampleRowArgs r = rows[blockIdx.x];
  float* lg = logits + static_cast<int64_t>(blockIdx.x) * vocab;
  double* p = probs + static_cast<int64_t>(blockIdx.x) * vocab;

  // Penalties: each listed token once (the host merged seen tokens and output counts).
  for (int e = threadIdx.x; e < r.pen_count; e += blockDim.x) {
    const PenaltyArgs pe = penalties[r.pen_begin + e];
    float v = lg[pe.id];
    // Rounded like the host (no fused multiply-add), so the penalised logits match bit for bit.
    if (r.repetition_penalty != 1.0f && pe.seen) {
      v = v > 0 ? __fdiv_rn(v, r.repetition_penalty) : __fmul_rn(v, r.repetition_penalty);
    }
    if ((r.presence_penalty != 0.0f || r.frequency_penalty != 0.0f) && pe.output_count > 0) {
      const float count = static_cast<float>(pe.output_count);
      v = __fsub_rn(v, __fadd_rn(__fmul_rn(r.frequency_penalty, count), r.presence_penalty));
    }
    lg[pe.id] = v;
  }
  __syncthreads();

  const bool greedy = r.temperature == 0.0f;
  const float inv_t = greedy ? 1.0f : 1.0f / r.temperature;
  // The top key: greedy's answer, and the upper end of every bisection.
  unsigned long long top = 0;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
    top = max(top, static_cast<unsigned long long>(SortKey(lg[i] * inv_t, i)));
  }
  top = BlockReduce(top, u_scratch, Max{});
  if (greedy) {
    if (threadIdx.x == 0) ids[blockIdx.x] = IdOfKey(top);
    return;
  }
  auto count_from = [&](uint64_t t) {
    int n = 0;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) n += SortKey(lg[i] * inv_t, i) >= t;
    return BlockReduce(n, reinterpret_cast<int*>(f_scratch), Sum{});
  };
  auto mass_from = [&](uint64_t t, uint64_t floor) {  // probability mass of keys >= max(t, floor)
    double m = 0;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
      const uint64_t k = SortKey(lg[i] * inv_t, i);
      if (k >= t && k >= floor) m += p[i];
    }
    return BlockReduce(m, d_scratch, Sum{});
  };

  // top-k: the k best keys.
  uint64_t keep_from = 0;
  if (r.top_k > 0 && r.top_k < vocab) {
    keep_from = LargestWhere(0, top, [&](uint64_t t) { return count_from(t) >= r.top_k; });
  }
  // Probabilities over the kept tokens, in double like the Sampler.
  float mx = -FLT_MAX;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
    const float c = lg[i] * inv_t;
    if (SortKey(c, i) >= keep_from) mx = fmaxf(mx, c);
  }
  mx = BlockReduce(mx, f_scratch, Max{});
  double sum = 0;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
    const float c = lg[i] * inv_t;
    const double e = SortKey(c, i) >= keep_from ? exp(static_cast<double>(c) - mx) : 0.0;
    p[i] = e;
    sum += e;
  }
  sum = BlockReduce(sum, d_scratch, Sum{});
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) p[i] /= sum;
  __syncthreads();

  // top-p: the shortest prefix (in key order) whose mass reaches top_p.
  if (r.top_p < 1.0f && mass_from(keep_from, keep_from) >= r.top_p) {
    keep_from = LargestWhere(keep_from, top, [&](uint64_t t) { return mass_from(t, keep_from) >= r.top_p; });
  }
  // min-p: tokens with p >= min_p * p_max (p falls along the key order, so this is a suffix cut).
  if (r.min_p > 0.0f) {
    const double p_max = 1.0 / sum;  // the top token's exp(0) / sum
    const double threshold = static_cast<double>(r.min_p) * p_max;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
      const uint64_t k = SortKey(lg[i] * inv_t, i);
      if (k != top && p[i] < threshold) p[i] = 0.0;  // out of the draw
    }
    __syncthreads();
  }
  // The draw: the first token, in the Sampler's walking order, whose running mass exceeds u times
  // the kept mass. With a cut the Sampler walks its sorted candidates (key order); without one it
  // walks the vocabulary by id, which the key 0xFFFFFFFF - id orders the same way.
  const bool by_id = !(r.top_k > 0 && r.top_k < vocab) && r.top_p >= 1.0f && r.min_p <= 0.0f;
  auto walk_key = [&](int i) -> uint64_t { return by_id ? 0xFFFFFFFFull - i : SortKey(lg[i] * inv_t, i); };
  auto mass_walk = [&](uint64_t t) {  // kept mass at or before walking key t
    double m = 0;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
      if (walk_key(i) >= t && SortKey(lg[i] * inv_t, i) >= keep_from) m += p[i];
    }
    return BlockReduce(m, d_scratch, Sum{});
  };
  const double target = r.uniform * mass_walk(0);
  auto exceeds = [&](uint64_t t) { return mass_walk(t) > target; };
  uint64_t chosen;
  if (exceeds(0)) {
    chosen = LargestWhere(0, by_id ? 0xFFFFFFFFull : top, exceeds);
  } else {
    // Rounding left the target at the kept mass: the last kept token, as the Sampler does.
    unsigned long long last = ~0ull;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
      if (SortKey(lg[i] * inv_t, i) >= keep_from && p[i] > 0.0) {
        last = min(last, static_cast<unsigned long long>(walk_key(i)));
      }
    }
    chosen = BlockReduce(last, u_scratch, Min{});
  }
  if (threadIdx.x == 0) ids[blockIdx.x] = IdOfKey(chosen);
}

}  // namespace

cudaError_t SampleTokens(float* logits, int vocab, const SampleRowArgs* rows, int n_rows, const PenaltyArgs* penalties,
                         double* probs, int32_t* ids, cudaStream_t s) {
  if (n_rows == 0) return cudaSuccess;
  SampleKernel<<<n_rows, kThreads, 0, s>>>(logits, vocab, rows, penalties, probs, ids);
  return cudaGetLastError();
}

}  // namespace brickserve::cuda
