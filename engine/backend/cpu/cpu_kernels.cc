// Highway kernels, compiled once per target instruction set (foreach_target) and dispatched at
// run time, so one binary runs at full speed on AVX2 and AVX-512 machines alike.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "engine/backend/cpu/cpu_kernels.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "hwy/cache_control.h"
#include "hwy/contrib/math/math-inl.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "engine/backend/cpu/cpu_kernels.h"

HWY_BEFORE_NAMESPACE();
namespace brickserve::cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;

// Highway 1.0 spells the horizontal sum SumOfLanes (broadcast to every lane).
HWY_INLINE float ReduceSum(DF df, hn::Vec<DF> v) { return hn::GetLane(hn::SumOfLanes(df, v)); }

// Loads N weights of type T starting at p as floats.
template <typename T>
HWY_INLINE hn::Vec<DF> LoadAsF32(DF df, const T* HWY_RESTRICT p) {
  if constexpr (std::is_same_v<T, float>) {
    return hn::LoadU(df, p);
  } else {
    const hn::Rebind<T, DF> dh;
    return hn::PromoteTo(df, hn::LoadU(dh, p));
  }
}

// IEEE half to float for scalar tails (Highway 1.0 has no scalar helper for it).
HWY_INLINE float HalfToFloat(hwy::float16_t h) {
  uint16_t bits;
  std::memcpy(&bits, &h, 2);
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000) << 16;
  const uint32_t exp = (bits >> 10) & 0x1f;
  const uint32_t mant = bits & 0x3ff;
  float mag;
  if (exp == 0) {
    mag = std::ldexp(static_cast<float>(mant), -24);  // zero or subnormal
  } else if (exp == 31) {
    mag = mant ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
  } else {
    mag = std::ldexp(static_cast<float>(mant | 0x400), static_cast<int>(exp) - 25);
  }
  return sign ? -mag : mag;
}

template <typename T>
HWY_INLINE float ToF32(T v) {
  if constexpr (std::is_same_v<T, float>) {
    return v;
  } else if constexpr (std::is_same_v<T, hwy::bfloat16_t>) {
    return hwy::F32FromBF16(v);
  } else {
    return HalfToFloat(v);
  }
}

// Bytes of each weight row prefetched ahead of a one-row (decode) product: the hardware prefetcher
// starts over at every 4 KiB page, and this keeps lines in flight across the boundary. Reading a
// memory-mapped checkpoint on 2 threads (AVX2 host): 24.3-24.7 -> 26.7-27.4 GB/s; BF16 decode of
// the 345M model 26.7-33.1 -> 33.9-37.9 tok/s (2 KiB ahead: the same within the noise). Not for
// the F32 decode tile: with its four weight rows in flight, prefetching each (once per line) cut
// F32 decode from 20-22 to 16-19 tok/s.
constexpr int64_t kDecodePrefetchBytes = 1024;

template <typename T>
HWY_INLINE void PrefetchAhead(const T* p) {
  hwy::Prefetch(reinterpret_cast<const char*>(p) + kDecodePrefetchBytes);
}

// RX x rows against RW weight rows, each given by its own pointer (contiguous for a dense product,
// gathered for a sparse one). Every (x row, weight row) pair has its own accumulator, summed over k
// in the same order whatever RX and RW are: a row's result never depends on the other rows.
template <int RX, int RW, typename T>
HWY_INLINE void DotTile(const float* const* HWY_RESTRICT x, int64_t in, const T* const* HWY_RESTRICT w,
                        float* HWY_RESTRICT y, int64_t y_stride) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  hn::Vec<DF> acc[RX][RW];
  for (int r = 0; r < RX; ++r)
    for (int o = 0; o < RW; ++o) acc[r][o] = hn::Zero(df);
  int64_t k = 0;
  for (; k + N <= in; k += N) {
    hn::Vec<DF> wv[RW];
    for (int o = 0; o < RW; ++o) wv[o] = LoadAsF32(df, w[o] + k);
    for (int r = 0; r < RX; ++r) {
      const auto xv = hn::LoadU(df, x[r] + k);
      for (int o = 0; o < RW; ++o) acc[r][o] = hn::MulAdd(wv[o], xv, acc[r][o]);
    }
  }
  for (int r = 0; r < RX; ++r) {
    for (int o = 0; o < RW; ++o) {
      float s = ReduceSum(df, acc[r][o]);
      for (int64_t kk = k; kk < in; ++kk) s += ToF32(w[o][kk]) * x[r][kk];
      y[r * y_stride + o] = s;
    }
  }
}

// Bytes of weight rows reused across x-row groups (well inside a 512 KiB L2).
constexpr int64_t kWeightTileBytes = 128 * 1024;

// Weight rows per tile with several x rows: the accumulators (4 x rows times this), the weight
// vectors and one x vector must fit the register file: 16 registers on AVX2, 32 on AVX-512.
#if HWY_TARGET <= HWY_AVX3
constexpr int kRowsTileW = 6;
#else
constexpr int kRowsTileW = 3;
#endif

// fn(std::integral_constant<int, RX>()) for a group of n x rows, n in 1..4: the tile shapes are
// compile-time.
template <typename Fn>
HWY_INLINE void WithRowGroup(int n, Fn&& fn) {
  switch (n) {
    case 1: return fn(std::integral_constant<int, 1>());
    case 2: return fn(std::integral_constant<int, 2>());
    case 3: return fn(std::integral_constant<int, 3>());
    default: return fn(std::integral_constant<int, 4>());
  }
}

// Weight row o of the tile: row o of a dense matrix, or row ids[o] of a gathered product.
template <typename T>
HWY_INLINE const T* WeightRow(const T* w, int64_t in, const int32_t* ids, int64_t o) {
  return w + (ids != nullptr ? static_cast<int64_t>(ids[o]) : o) * in;
}

template <int RX, typename T>
HWY_INLINE void DotRowsGroup(const float* const* HWY_RESTRICT x, int64_t in, const T* HWY_RESTRICT w,
                             const int32_t* ids, int64_t o0, int64_t o1, float* HWY_RESTRICT y, int64_t y_stride) {
  // Decode (one x row) is memory bound. F32: four weight rows per pass give enough independent
  // sums. F16 (BF16 has MatVecBF16): one row at a time, one sequential stream; with four
  // interleaved rows BF16 decode ran at half the speed here (engine_bench: 24-33 vs 42-48 tok/s).
  constexpr int RW = RX > 1 ? kRowsTileW : (sizeof(T) == 4 ? 4 : 1);
  int64_t o = o0;
  for (; o + RW <= o1; o += RW) {
    const T* wr[RW];
    for (int i = 0; i < RW; ++i) wr[i] = WeightRow(w, in, ids, o + i);
    DotTile<RX, RW>(x, in, wr, y + o, y_stride);
  }
  for (; o < o1; ++o) {
    const T* wr[1] = {WeightRow(w, in, ids, o)};
    DotTile<RX, 1>(x, in, wr, y + o, y_stride);
  }
}

// y[r * y_stride + o] = dot(x[r], weight row o) for o in [o_begin, o_end): row o of w, or row ids[o]
// when gathering.
template <typename T>
void MatVecT(const float* const* HWY_RESTRICT x, int rows, int64_t in, const T* HWY_RESTRICT w,
             const int32_t* ids, int64_t o_begin, int64_t o_end, float* HWY_RESTRICT y, int64_t y_stride) {
  // A tile of weight rows stays in L2 while every group of x rows passes over it, so many rows
  // cost one read of the weights from memory.
  const int64_t tile = std::max<int64_t>(4, kWeightTileBytes / (in * static_cast<int64_t>(sizeof(T))));
  for (int64_t t0 = o_begin; t0 < o_end; t0 += tile) {
    const int64_t t1 = std::min(o_end, t0 + tile);
    for (int r0 = 0; r0 < rows; r0 += 4) {
      const float* const* xr = x + r0;
      float* yr = y + r0 * y_stride;
      WithRowGroup(std::min(4, rows - r0), [&](auto rx) {
        DotRowsGroup<decltype(rx)::value>(xr, in, w, ids, t0, t1, yr, y_stride);
      });
    }
  }
}

// --- BF16 weights: even and odd halves --------------------------------------------------------
// A bfloat16 is the top half of a float. Read as N 32-bit lanes, 2N BF16 weights give the
// even-indexed weights as floats by a shift and the odd-indexed ones by a mask: two plain ALU ops
// instead of a widening shuffle per N weights (AVX2, one thread: a standalone loop read 9.5 -> 12.5
// GB/s, the engine's products 10.6 -> 11.5).
// So each (x row, weight row) pair sums its even and its odd products in two accumulators, and x
// rows are permuted to match once per call: over the full blocks of 2N, all even elements, then all
// odd ones. The one-row kernel and the multi-row tiles keep that order: results stay batch invariant.

using DU32 = hn::Repartition<uint32_t, DF>;

// xp = x's even elements then its odd ones, over x's first `blocks_len` (a multiple of 2N); the
// tail is read from x itself.
HWY_INLINE void PermuteEvenOdd(const float* HWY_RESTRICT x, int64_t blocks_len, float* HWY_RESTRICT xp) {
  const int64_t half = blocks_len / 2;
  for (int64_t i = 0; i < half; ++i) {
    xp[i] = x[2 * i];
    xp[half + i] = x[2 * i + 1];
  }
}

// Even and odd weights of the 2N at w as floats.
HWY_INLINE void LoadEvenOdd(const hwy::bfloat16_t* HWY_RESTRICT w, hn::Vec<DF>& even, hn::Vec<DF>& odd) {
  const DF df;
  const DU32 du;
  const auto raw = hn::LoadU(du, reinterpret_cast<const uint32_t*>(w));
  even = hn::BitCast(df, hn::ShiftLeft<16>(raw));
  odd = hn::BitCast(df, hn::And(raw, hn::Set(du, 0xFFFF0000u)));
}

// The sum both kernels finish with: even + odd accumulators, lanes, then the tail in order.
HWY_INLINE float FinishEvenOdd(hn::Vec<DF> even, hn::Vec<DF> odd, const float* HWY_RESTRICT x,
                               const hwy::bfloat16_t* HWY_RESTRICT w, int64_t blocks_len, int64_t in) {
  float s = ReduceSum(DF(), hn::Add(even, odd));
  for (int64_t k = blocks_len; k < in; ++k) s += hwy::F32FromBF16(w[k]) * x[k];
  return s;
}

// One x row (decode): straight from the BF16 weights, one sequential stream per weight row.
HWY_INLINE void DotRowBF16(const float* HWY_RESTRICT x, const float* HWY_RESTRICT xp, int64_t in, int64_t blocks_len,
                           const hwy::bfloat16_t* HWY_RESTRICT w, float* HWY_RESTRICT y) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  const float* HWY_RESTRICT xp_odd = xp + blocks_len / 2;
  auto acc_even = hn::Zero(df), acc_odd = hn::Zero(df);
  for (int64_t k = 0; k < blocks_len; k += 2 * N) {
    PrefetchAhead(w + k);
    hn::Vec<DF> even, odd;
    LoadEvenOdd(w + k, even, odd);
    acc_even = hn::MulAdd(even, hn::LoadU(df, xp + k / 2), acc_even);
    acc_odd = hn::MulAdd(odd, hn::LoadU(df, xp_odd + k / 2), acc_odd);
  }
  *y = FinishEvenOdd(acc_even, acc_odd, x, w, blocks_len, in);
}

// acc[r][o] = sum over [k0, k1) of F32 rows: xp rows `x_ld` apart against wf rows `w_ld` apart.
template <int RX, int RW>
HWY_INLINE void AccumulateTile(const float* HWY_RESTRICT xp, int64_t x_ld, const float* HWY_RESTRICT wf, int64_t w_ld,
                               int64_t k0, int64_t k1, hn::Vec<DF> (&acc)[RX][RW]) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  for (int r = 0; r < RX; ++r)
    for (int o = 0; o < RW; ++o) acc[r][o] = hn::Zero(df);
  for (int64_t k = k0; k < k1; k += N) {
    hn::Vec<DF> wv[RW];
    for (int o = 0; o < RW; ++o) wv[o] = hn::LoadU(df, wf + o * w_ld + k);
    for (int r = 0; r < RX; ++r) {
      const auto xv = hn::LoadU(df, xp + r * x_ld + k);
      for (int o = 0; o < RW; ++o) acc[r][o] = hn::MulAdd(wv[o], xv, acc[r][o]);
    }
  }
}

// RX x rows against RW weight rows already widened into F32 and permuted like xp (wf, `w_ld`
// floats apart): the even sums in one pass, the odd ones in a second, each a tile as dense as the
// F32 kernel's; the same two sums per pair as DotRowBF16.
template <int RX, int RW>
HWY_INLINE void DotTileEvenOdd(const float* const* HWY_RESTRICT x, const float* HWY_RESTRICT xp, int64_t in,
                               int64_t blocks_len, const float* HWY_RESTRICT wf, int64_t w_ld,
                               const hwy::bfloat16_t* const* HWY_RESTRICT w, float* HWY_RESTRICT y, int64_t y_stride) {
  const int64_t half = blocks_len / 2;
  hn::Vec<DF> even[RX][RW], odd[RX][RW];
  AccumulateTile<RX, RW>(xp, blocks_len, wf, w_ld, 0, half, even);
  AccumulateTile<RX, RW>(xp, blocks_len, wf, w_ld, half, blocks_len, odd);
  for (int r = 0; r < RX; ++r) {
    for (int o = 0; o < RW; ++o) {
      y[r * y_stride + o] = FinishEvenOdd(even[r][o], odd[r][o], x[r], w[o], blocks_len, in);
    }
  }
}

template <int RX>
HWY_INLINE void DotRowsGroupEvenOdd(const float* const* HWY_RESTRICT x, const float* HWY_RESTRICT xp, int64_t in,
                                    int64_t blocks_len, const float* HWY_RESTRICT wf, int64_t w_ld,
                                    const hwy::bfloat16_t* const* HWY_RESTRICT w, int64_t n, float* HWY_RESTRICT y,
                                    int64_t y_stride) {
  int64_t o = 0;
  for (; o + kRowsTileW <= n; o += kRowsTileW) {
    DotTileEvenOdd<RX, kRowsTileW>(x, xp, in, blocks_len, wf + o * w_ld, w_ld, w + o, y + o, y_stride);
  }
  for (; o < n; ++o) DotTileEvenOdd<RX, 1>(x, xp, in, blocks_len, wf + o * w_ld, w_ld, w + o, y + o, y_stride);
}

void MatVecBF16(const float* const* HWY_RESTRICT x, int rows, int64_t in, const hwy::bfloat16_t* HWY_RESTRICT w,
                const int32_t* ids, int64_t o_begin, int64_t o_end, float* HWY_RESTRICT y, int64_t y_stride) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  const int64_t blocks_len = in / (2 * N) * (2 * N), half = blocks_len / 2;
  thread_local std::vector<float> xp;
  xp.resize(static_cast<size_t>(rows) * blocks_len);
  for (int r = 0; r < rows; ++r) PermuteEvenOdd(x[r], blocks_len, xp.data() + r * blocks_len);
  if (rows == 1) {
    for (int64_t o = o_begin; o < o_end; ++o) {
      DotRowBF16(x[0], xp.data(), in, blocks_len, WeightRow(w, in, ids, o), y + o);
    }
    return;
  }
  // Several rows: each tile of weight rows is widened once into F32 (permuted), stays in L2 and
  // serves every group of x rows.
  const int64_t tile = std::max<int64_t>(4, kWeightTileBytes / (in * static_cast<int64_t>(sizeof(hwy::bfloat16_t))));
  const int64_t w_ld = blocks_len;
  thread_local std::vector<float> wf;
  thread_local std::vector<const hwy::bfloat16_t*> wrows;
  wf.resize(static_cast<size_t>(tile * w_ld));
  wrows.resize(static_cast<size_t>(tile));
  for (int64_t t0 = o_begin; t0 < o_end; t0 += tile) {
    const int64_t n = std::min(o_end, t0 + tile) - t0;
    for (int64_t o = 0; o < n; ++o) {
      wrows[o] = WeightRow(w, in, ids, t0 + o);
      float* row = wf.data() + o * w_ld;
      for (int64_t k = 0; k < blocks_len; k += 2 * N) {
        PrefetchAhead(wrows[o] + k);
        hn::Vec<DF> even, odd;
        LoadEvenOdd(wrows[o] + k, even, odd);
        hn::StoreU(even, df, row + k / 2);
        hn::StoreU(odd, df, row + half + k / 2);
      }
    }
    for (int r0 = 0; r0 < rows; r0 += 4) {
      const float* const* xr = x + r0;
      const float* xpr = xp.data() + r0 * blocks_len;
      float* yr = y + r0 * y_stride + t0;
      WithRowGroup(std::min(4, rows - r0), [&](auto rx) {
        DotRowsGroupEvenOdd<decltype(rx)::value>(xr, xpr, in, blocks_len, wf.data(), w_ld, wrows.data(), n, yr,
                                                 y_stride);
      });
    }
  }
}

void MatVecAny(const float* const* x, int rows, int64_t in, const void* w, DType w_dtype, const int32_t* ids,
               int64_t o_begin, int64_t o_end, float* y, int64_t y_stride) {
  switch (w_dtype) {
    case DType::kF32: return MatVecT(x, rows, in, static_cast<const float*>(w), ids, o_begin, o_end, y, y_stride);
    case DType::kBF16:
      return MatVecBF16(x, rows, in, static_cast<const hwy::bfloat16_t*>(w), ids, o_begin, o_end, y, y_stride);
    case DType::kF16:
      return MatVecT(x, rows, in, static_cast<const hwy::float16_t*>(w), ids, o_begin, o_end, y, y_stride);
    default: return;
  }
}

void MatVecRows(const float* x, int rows, int64_t in, const void* w, DType w_dtype, int64_t o_begin,
                int64_t o_end, float* y, int64_t y_stride) {
  // All rows in one call, so each weight tile is read once for all of them.
  thread_local std::vector<const float*> xr;
  xr.resize(static_cast<size_t>(rows));
  for (int r = 0; r < rows; ++r) xr[r] = x + static_cast<int64_t>(r) * in;
  MatVecAny(xr.data(), rows, in, w, w_dtype, nullptr, o_begin, o_end, y, y_stride);
}

void MatVecGathered(const float* const* x, int rows, int64_t in, const void* w, DType w_dtype,
                    const int32_t* ids, int64_t n_ids, float* y, int64_t y_stride) {
  MatVecAny(x, rows, in, w, w_dtype, ids, 0, n_ids, y, y_stride);
}

template <typename T>
void ConvertT(const T* HWY_RESTRICT src, size_t n, float* HWY_RESTRICT out) {
  const DF df;
  const size_t N = hn::Lanes(df);
  size_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(LoadAsF32(df, src + i), df, out + i);
  for (; i < n; ++i) out[i] = ToF32(src[i]);
}

void ConvertToF32(const void* src, DType dtype, size_t n, float* out) {
  switch (dtype) {
    case DType::kF32: return ConvertT(static_cast<const float*>(src), n, out);
    case DType::kBF16: return ConvertT(static_cast<const hwy::bfloat16_t*>(src), n, out);
    case DType::kF16: return ConvertT(static_cast<const hwy::float16_t*>(src), n, out);
    default: return;
  }
}

template <typename T>
void AddRowsTimesMatrixT(const float* HWY_RESTRICT t, int rows, int64_t k, const T* HWY_RESTRICT w, int64_t n,
                         const int32_t* ids, int64_t o_begin, int64_t o_end, float* const* y, bool accumulate) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  // Columns in chunks; within one, weight row after weight row (a sequential stream the prefetcher
  // follows), each added to every output row, which stay in L1. Each y element still adds its k
  // terms in order j = 0..k-1, whatever the other rows are (batch-invariant).
  if (!accumulate && (rows != 1 || k == 0)) {
    for (int r = 0; r < rows; ++r) std::fill(y[r] + o_begin, y[r] + o_end, 0.0f);
    accumulate = true;
  }
  if (rows == 1) {  // decode: each weight row straight into the one output row
    float* HWY_RESTRICT y0 = y[0];
    int64_t j = 0;
    if (!accumulate) {  // y = the first term: no pass to clear y first
      const T* w0 = WeightRow(w, n, ids, 0);
      const auto a = hn::Set(df, t[0]);
      int64_t o = o_begin;
      for (; o + N <= o_end; o += N) hn::StoreU(hn::Mul(a, LoadAsF32(df, w0 + o)), df, y0 + o);
      for (; o < o_end; ++o) y0[o] = t[0] * ToF32(w0[o]);
      j = 1;
    }
    for (; j < k; ++j) {
      const T* wj = WeightRow(w, n, ids, j);
      const auto a = hn::Set(df, t[j]);
      int64_t o = o_begin;
      for (; o + N <= o_end; o += N) hn::StoreU(hn::MulAdd(a, LoadAsF32(df, wj + o), hn::LoadU(df, y0 + o)), df, y0 + o);
      for (; o < o_end; ++o) y0[o] += t[j] * ToF32(wj[o]);
    }
    return;
  }
  constexpr int64_t kChunk = 2048;  // long runs of each weight row: few, long streams
  HWY_ALIGN float wf[kChunk];
  for (int64_t c0 = o_begin; c0 < o_end; c0 += kChunk) {
    const int64_t c1 = std::min(o_end, c0 + kChunk), len = c1 - c0;
    for (int64_t j = 0; j < k; ++j) {
      const T* wj = WeightRow(w, n, ids, j) + c0;
      int64_t o = 0;
      for (; o + N <= len; o += N) hn::Store(LoadAsF32(df, wj + o), df, wf + o);
      for (; o < len; ++o) wf[o] = ToF32(wj[o]);
      for (int r = 0; r < rows; ++r) {
        const auto a = hn::Set(df, t[r * k + j]);
        const float ar = t[r * k + j];
        float* yr = y[r] + c0;
        o = 0;
        for (; o + N <= len; o += N) hn::StoreU(hn::MulAdd(a, hn::Load(df, wf + o), hn::LoadU(df, yr + o)), df, yr + o);
        for (; o < len; ++o) yr[o] += ar * wf[o];
      }
    }
  }
}

void RowsTimesGatheredRows(const float* t, int rows, int64_t k, const void* w, DType w_dtype, int64_t n,
                           const int32_t* ids, int64_t o_begin, int64_t o_end, float* const* y, bool accumulate) {
  switch (w_dtype) {
    case DType::kF32:
      return AddRowsTimesMatrixT(t, rows, k, static_cast<const float*>(w), n, ids, o_begin, o_end, y, accumulate);
    case DType::kBF16:
      return AddRowsTimesMatrixT(t, rows, k, static_cast<const hwy::bfloat16_t*>(w), n, ids, o_begin, o_end, y,
                                 accumulate);
    case DType::kF16:
      return AddRowsTimesMatrixT(t, rows, k, static_cast<const hwy::float16_t*>(w), n, ids, o_begin, o_end, y,
                                 accumulate);
    default:
      return;
  }
}

void SiluMul(const float* gate, const float* up, size_t n, float* out) {
  const DF df;
  const size_t N = hn::Lanes(df);
  const auto one = hn::Set(df, 1.0f);
  size_t i = 0;
  for (; i + N <= n; i += N) {
    const auto g = hn::LoadU(df, gate + i);
    const auto silu = hn::Div(g, hn::Add(one, hn::Exp(df, hn::Neg(g))));
    hn::StoreU(hn::Mul(silu, hn::LoadU(df, up + i)), df, out + i);
  }
  for (; i < n; ++i) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

void SoftmaxPrefix(float* HWY_RESTRICT x, size_t n, size_t valid) {
  const DF df;
  const size_t N = hn::Lanes(df);
  float mx = -std::numeric_limits<float>::infinity();
  for (size_t i = 0; i < valid; ++i) mx = std::max(mx, x[i]);
  const auto vmx = hn::Set(df, mx);
  auto acc = hn::Zero(df);
  size_t i = 0;
  for (; i + N <= valid; i += N) {
    const auto e = hn::Exp(df, hn::Sub(hn::LoadU(df, x + i), vmx));
    hn::StoreU(e, df, x + i);
    acc = hn::Add(acc, e);
  }
  float sum = ReduceSum(df, acc);
  for (; i < valid; ++i) sum += x[i] = std::exp(x[i] - mx);
  const float inv = 1.0f / sum;
  const auto vinv = hn::Set(df, inv);
  i = 0;
  for (; i + N <= valid; i += N) hn::StoreU(hn::Mul(hn::LoadU(df, x + i), vinv), df, x + i);
  for (; i < valid; ++i) x[i] *= inv;
  for (i = valid; i < n; ++i) x[i] = 0.0f;
}

// out[0..hd) = sum over the positions of p_t * V row t, four vectors of columns at a time held in
// registers; each element adds its terms in position order (as an axpy per position would).
template <typename ForEachPosition>
HWY_INLINE void WeightedSumOfRows(const float* HWY_RESTRICT p, const float* v, size_t hd,
                                  ForEachPosition&& for_each_position, float* HWY_RESTRICT out) {
  const DF df;
  const size_t N = hn::Lanes(df);
  size_t c = 0;
  for (; c + 4 * N <= hd; c += 4 * N) {
    auto a0 = hn::Zero(df), a1 = hn::Zero(df), a2 = hn::Zero(df), a3 = hn::Zero(df);
    for_each_position([&](size_t t, size_t offset) {
      const float* vr = v + offset + c;
      const auto pt = hn::Set(df, p[t]);
      a0 = hn::MulAdd(pt, hn::LoadU(df, vr), a0);
      a1 = hn::MulAdd(pt, hn::LoadU(df, vr + N), a1);
      a2 = hn::MulAdd(pt, hn::LoadU(df, vr + 2 * N), a2);
      a3 = hn::MulAdd(pt, hn::LoadU(df, vr + 3 * N), a3);
    });
    hn::StoreU(a0, df, out + c);
    hn::StoreU(a1, df, out + c + N);
    hn::StoreU(a2, df, out + c + 2 * N);
    hn::StoreU(a3, df, out + c + 3 * N);
  }
  for (; c + N <= hd; c += N) {
    auto a0 = hn::Zero(df);
    for_each_position([&](size_t t, size_t offset) { a0 = hn::MulAdd(hn::Set(df, p[t]), hn::LoadU(df, v + offset + c), a0); });
    hn::StoreU(a0, df, out + c);
  }
  for (; c < hd; ++c) {
    float acc = 0.0f;
    for_each_position([&](size_t t, size_t offset) { acc += p[t] * v[offset + c]; });
    out[c] = acc;
  }
}

// scores[g * n + t0 + j] = scale * q_g . K column j of one block, j < len, for K stored transposed
// per block (kt[c * block_size + j]: column j = the block's slot j). Each lane sums its d terms in
// order over four interleaved partial sums (d mod 4), added at the end: no horizontal reductions,
// and enough independent sums to keep the FMA units busy.
HWY_INLINE void BlockScores(const float* HWY_RESTRICT q, int group, size_t hd, float scale, const float* HWY_RESTRICT kt,
                            size_t bs, size_t len, size_t n, size_t t0, float* HWY_RESTRICT scores) {
  const DF df;
  const size_t N = hn::Lanes(df);
  constexpr int kHeads = 2, kSplit = 4;
  if (bs % N != 0) {  // blocks narrower than a vector: slot by slot, the same partial sums in scalars
    for (size_t j = 0; j < len; ++j) {
      for (int g = 0; g < group; ++g) {
        float part[kSplit] = {};
        size_t d = 0;
        for (; d + kSplit <= hd; d += kSplit)
          for (int s = 0; s < kSplit; ++s) part[s] += q[g * hd + d + s] * kt[(d + s) * bs + j];
        for (; d < hd; ++d) part[0] += q[g * hd + d] * kt[d * bs + j];
        scores[g * n + t0 + j] = ((part[0] + part[1]) + (part[2] + part[3])) * scale;
      }
    }
    return;
  }
  HWY_ALIGN float tmp[hn::MaxLanes(df)];
  for (size_t j0 = 0; j0 < len; j0 += N) {
    for (int g0 = 0; g0 < group; g0 += kHeads) {
      const int heads = std::min(kHeads, group - g0);
      hn::Vec<DF> acc[kHeads][kSplit];
      for (auto& a : acc)
        for (auto& v : a) v = hn::Zero(df);
      size_t d = 0;
      for (; d + kSplit <= hd; d += kSplit) {
        for (int s = 0; s < kSplit; ++s) {
          const auto kv = hn::LoadU(df, kt + (d + s) * bs + j0);
          for (int h = 0; h < heads; ++h) acc[h][s] = hn::MulAdd(hn::Set(df, q[(g0 + h) * hd + d + s]), kv, acc[h][s]);
        }
      }
      for (; d < hd; ++d) {
        const auto kv = hn::LoadU(df, kt + d * bs + j0);
        for (int h = 0; h < heads; ++h) acc[h][0] = hn::MulAdd(hn::Set(df, q[(g0 + h) * hd + d]), kv, acc[h][0]);
      }
      const size_t valid = std::min(N, len - j0);
      for (int h = 0; h < heads; ++h) {
        const auto sum = hn::Mul(hn::Add(hn::Add(acc[h][0], acc[h][1]), hn::Add(acc[h][2], acc[h][3])), hn::Set(df, scale));
        float* dst = scores + static_cast<size_t>(g0 + h) * n + t0 + j0;
        if (valid == N) {
          hn::StoreU(sum, df, dst);
        } else {
          hn::Store(sum, df, tmp);
          std::memcpy(dst, tmp, valid * sizeof(float));
        }
      }
    }
  }
}

void AttendKvHead(const float* HWY_RESTRICT q, int group, int head_dim, float scale, const float* k, const float* v,
                  size_t kv_stride, const int32_t* block_table, int block_size, size_t n, float* HWY_RESTRICT scores,
                  float* HWY_RESTRICT out) {
  const size_t hd = static_cast<size_t>(head_dim);
  const size_t bs = static_cast<size_t>(block_size);
  const size_t block_floats = bs * kv_stride;
  // Positions [0, n) block by block: the slots of a block are contiguous in the cache.
  auto for_each_position = [&](auto&& fn) {
    for (size_t t0 = 0; t0 < n; t0 += bs) {
      const size_t slot0 = static_cast<size_t>(block_table[t0 / bs]) * bs;
      const size_t len = std::min(bs, n - t0);
      for (size_t j = 0; j < len; ++j) fn(t0 + j, (slot0 + j) * kv_stride);
    }
  };
  for (size_t t0 = 0; t0 < n; t0 += bs) {
    const float* kt = k + static_cast<size_t>(block_table[t0 / bs]) * block_floats;
    BlockScores(q, group, hd, scale, kt, bs, std::min(bs, n - t0), n, t0, scores);
  }
  for (int g = 0; g < group; ++g) {
    SoftmaxPrefix(scores + g * n, n, n);
    WeightedSumOfRows(scores + g * n, v, hd, for_each_position, out + g * hd);
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace brickserve::cpu
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace brickserve::cpu {

HWY_EXPORT(MatVecRows);
HWY_EXPORT(ConvertToF32);
HWY_EXPORT(AttendKvHead);
HWY_EXPORT(RowsTimesGatheredRows);
HWY_EXPORT(MatVecGathered);
HWY_EXPORT(SiluMul);
HWY_EXPORT(SoftmaxPrefix);

void MatVecRows(const float* x, int rows, int64_t in, const void* w, DType w_dtype, int64_t o_begin,
                int64_t o_end, float* y, int64_t y_stride) {
  HWY_DYNAMIC_DISPATCH(MatVecRows)(x, rows, in, w, w_dtype, o_begin, o_end, y, y_stride);
}
void ConvertToF32(const void* src, DType dtype, size_t n, float* out) {
  HWY_DYNAMIC_DISPATCH(ConvertToF32)(src, dtype, n, out);
}
void AttendKvHead(const float* q, int group, int head_dim, float scale, const float* k, const float* v,
                  size_t kv_stride, const int32_t* block_table, int block_size, size_t n, float* scores, float* out) {
  HWY_DYNAMIC_DISPATCH(AttendKvHead)(q, group, head_dim, scale, k, v, kv_stride, block_table, block_size, n, scores, out);
}
void AddRowsTimesMatrix(const float* t, int rows, int64_t k, const void* w, DType w_dtype, int64_t n,
                        int64_t o_begin, int64_t o_end, float* const* y) {
  HWY_DYNAMIC_DISPATCH(RowsTimesGatheredRows)(t, rows, k, w, w_dtype, n, nullptr, o_begin, o_end, y, true);
}
void RowsTimesGatheredRows(const float* t, int rows, int64_t k, const void* w, DType w_dtype, int64_t n,
                           const int32_t* ids, int64_t o_begin, int64_t o_end, float* const* y, bool accumulate) {
  HWY_DYNAMIC_DISPATCH(RowsTimesGatheredRows)(t, rows, k, w, w_dtype, n, ids, o_begin, o_end, y, accumulate);
}
void MatVecGathered(const float* const* x, int rows, int64_t in, const void* w, DType w_dtype,
                    const int32_t* ids, int64_t n_ids, float* y, int64_t y_stride) {
  HWY_DYNAMIC_DISPATCH(MatVecGathered)(x, rows, in, w, w_dtype, ids, n_ids, y, y_stride);
}
void SiluMul(const float* gate, const float* up, size_t n, float* out) {
  HWY_DYNAMIC_DISPATCH(SiluMul)(gate, up, n, out);
}
void SoftmaxPrefix(float* x, size_t n, size_t valid) { HWY_DYNAMIC_DISPATCH(SoftmaxPrefix)(x, n, valid); }

}  // namespace brickserve::cpu
#endif  // HWY_ONCE
