// Panel kernels, compiled once per target instruction set (foreach_target) and dispatched at run
// time like cpu_kernels.cc.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "engine/backend/cpu/panel_kernels.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "hwy/cache_control.h"

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "engine/backend/cpu/panel_kernels.h"

HWY_BEFORE_NAMESPACE();
namespace brickserve::cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// A BF16 panel row is 16 weights in 32 bytes. With 512-bit vectors it widens into one float vector
// (PromoteTo); narrower targets keep it as 8 pairs that one 32-byte load splits into two float
// vectors of 8 by a shift and a mask (see PanelSlot). The layout is the target's own: PackPanels
// and PanelMatMul dispatch to the same target.
#if HWY_TARGET <= HWY_AVX3
constexpr bool kBF16Pairs = false;
#else
constexpr bool kBF16Pairs = true;
#endif

// F32 panels use full vectors; BF16 panels as pairs at most 8 lanes.
template <typename T>
using PanelTag = std::conditional_t<std::is_same_v<T, float> || !kBF16Pairs, hn::ScalableTag<float>,
                                    hn::CappedTag<float, 8>>;

// BF16 pairs: 32-bit lane i = (output i, output 8 + i), so the low halves (shifted up) are outputs
// 0..7 and the high halves (masked) outputs 8..15.
template <typename T>
HWY_INLINE int64_t PanelSlot(int64_t j) {
  if constexpr (std::is_same_v<T, float> || !kBF16Pairs) {
    return j;
  } else {
    return j < 8 ? 2 * j : 2 * (j - 8) + 1;
  }
}

template <typename T>
void PackPanelsT(const T* HWY_RESTRICT w, int64_t out, int64_t in, int64_t p_begin, int64_t p_end,
                 T* HWY_RESTRICT panels) {
  for (int64_t p = p_begin; p < p_end; ++p) {
    T* HWY_RESTRICT dst = panels + p * kPanelWidth * in;
    for (int64_t j = 0; j < kPanelWidth; ++j) {
      const int64_t o = p * kPanelWidth + j, slot = PanelSlot<T>(j);
      if (o >= out) {
        for (int64_t k = 0; k < in; ++k) std::memset(&dst[k * kPanelWidth + slot], 0, sizeof(T));
        continue;
      }
      const T* HWY_RESTRICT row = w + o * in;
      for (int64_t k = 0; k < in; ++k) dst[k * kPanelWidth + slot] = row[k];
    }
  }
}

void PackPanels(const void* w, DType dtype, int64_t out, int64_t in, int64_t p_begin, int64_t p_end, void* panels) {
  if (dtype == DType::kF32) {
    PackPanelsT(static_cast<const float*>(w), out, in, p_begin, p_end, static_cast<float*>(panels));
  } else if (dtype == DType::kBF16) {
    PackPanelsT(static_cast<const hwy::bfloat16_t*>(w), out, in, p_begin, p_end, static_cast<hwy::bfloat16_t*>(panels));
  }
}

// Per weight type: lanes per vector, vectors per panel (2 on AVX2).
template <typename T>
struct PanelShape {
  static constexpr size_t kLanes = hn::MaxLanes(PanelTag<T>());
  static constexpr int kVecsPerPanel = static_cast<int>(kPanelWidth / std::min<size_t>(kLanes, kPanelWidth));
};

// Accumulator registers a tile may use, leaving room for the weight vectors and the broadcast x.
#if HWY_TARGET <= HWY_AVX3
constexpr int kAccRegs = 24;
#else
constexpr int kAccRegs = 12;
#endif
template <typename T>
constexpr int MaxRowsPerTile() {
  constexpr int vpp = PanelShape<T>::kVecsPerPanel;
  return std::max(1, kAccRegs / std::max(1, (vpp < 2 ? 2 : 1) * vpp));
}
// Panels per tile for MR rows: enough independent sums to keep the FMA units busy at few rows.
template <typename T, int MR>
constexpr int PanelsPerTile() {
  return std::clamp(kAccRegs / (MR * PanelShape<T>::kVecsPerPanel), 1, 4);
}

// Cache lines to prefetch while a tile runs: one per k step, from `next` on.
struct PrefetchRun {
  const char* next = nullptr;
  int64_t lines = 0;
};

constexpr int64_t kLineBytes = 64;
// How far ahead of its k step a tile of many rows prefetches its own panels. Such a tile spends
// long enough on each cache line that the hardware prefetcher, which stops at every 4 KiB page,
// falls behind a stream from memory; measured best at 8 KiB (F32 rows 12-32 from DRAM, Zen 5:
// +25-40 %). Tiles of few rows are memory bound already and lose a little to the extra loads.
constexpr int64_t kAheadBytes = 8192;
constexpr int kAheadMinRows = 6;

// The weights of one panel row (k) as float vectors: wv[v] holds outputs v * lanes ...
template <typename T, class D>
HWY_INLINE void LoadPanelRow(D d, const T* HWY_RESTRICT row, hn::Vec<D>* HWY_RESTRICT wv) {
  constexpr int64_t N = static_cast<int64_t>(hn::MaxLanes(D()));
  constexpr int VPP = PanelShape<T>::kVecsPerPanel;
  if constexpr (std::is_same_v<T, float>) {
    for (int v = 0; v < VPP; ++v) wv[v] = hn::Load(d, row + v * N);
  } else if constexpr (!kBF16Pairs) {
    const hn::Rebind<T, D> dh;
    for (int v = 0; v < VPP; ++v) wv[v] = hn::PromoteTo(d, hn::LoadU(dh, row + v * N));
  } else {
    const hn::Repartition<uint32_t, D> du;
    const auto* pairs = reinterpret_cast<const uint32_t*>(row);
    for (int j = 0; j < VPP / 2; ++j) {
      const auto raw = hn::LoadU(du, pairs + j * N);
      wv[j] = hn::BitCast(d, hn::ShiftLeft<16>(raw));                                 // outputs j*N ...
      wv[VPP / 2 + j] = hn::BitCast(d, hn::And(raw, hn::Set(du, 0xFFFF0000u)));  // outputs 8 + j*N ...
    }
  }
}

// MR x rows (`in` apart) times NP panels: acc[r][v] adds x[r][k] * weight for k = 0 .. in-1 in
// order, one lane per output. `valid` = outputs of the tile that exist.
template <typename T, int MR, int NP>
HWY_INLINE void PanelTile(const float* HWY_RESTRICT x, int64_t in, const T* HWY_RESTRICT panels, float* HWY_RESTRICT y,
                          int64_t y_stride, int64_t valid, PrefetchRun pf) {
  const PanelTag<T> d;
  constexpr int VPP = PanelShape<T>::kVecsPerPanel;
  constexpr int NV = NP * VPP;
  constexpr int64_t N = static_cast<int64_t>(PanelShape<T>::kLanes);
  const int64_t panel_stride = kPanelWidth * in;
  hn::Vec<decltype(d)> acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = hn::Zero(d);
  // Panel rows per cache line (1 for F32, 2 for BF16) and the prefetch distance in k steps.
  constexpr int64_t kRowsPerLine = kLineBytes / (kPanelWidth * static_cast<int64_t>(sizeof(T)));
  constexpr int64_t kAhead = kAheadBytes / (kPanelWidth * static_cast<int64_t>(sizeof(T)));
  for (int64_t k = 0; k < in; ++k) {
    if (k < pf.lines) hwy::Prefetch(pf.next + k * kLineBytes);
    if constexpr (MR >= kAheadMinRows) {
      if (k % kRowsPerLine == 0 && k + kAhead < in) {
        for (int p = 0; p < NP; ++p) hwy::Prefetch(panels + p * panel_stride + (k + kAhead) * kPanelWidth);
      }
    }
    hn::Vec<decltype(d)> wv[NV];
    for (int p = 0; p < NP; ++p) LoadPanelRow(d, panels + p * panel_stride + k * kPanelWidth, wv + p * VPP);
    for (int r = 0; r < MR; ++r) {
      const auto xb = hn::Set(d, x[r * in + k]);
      for (int v = 0; v < NV; ++v) acc[r][v] = hn::MulAdd(wv[v], xb, acc[r][v]);
    }
  }
  constexpr int64_t kTileWidth = NP * kPanelWidth;
  if (valid == kTileWidth) {
    for (int r = 0; r < MR; ++r)
      for (int v = 0; v < NV; ++v) hn::StoreU(acc[r][v], d, y + r * y_stride + v * N);
    return;
  }
  HWY_ALIGN float tmp[kTileWidth];
  for (int r = 0; r < MR; ++r) {
    for (int v = 0; v < NV; ++v) hn::StoreU(acc[r][v], d, tmp + v * N);
    std::memcpy(y + r * y_stride, tmp, static_cast<size_t>(valid) * sizeof(float));
  }
}

// `pf`: lines to prefetch over the whole pass, `pf.lines` per tile.
template <typename T, int MR>
HWY_INLINE void PanelRowGroup(const float* x, int64_t in, const T* panels, int64_t out, int64_t p_begin,
                              int64_t p_end, float* y, int64_t y_stride, PrefetchRun pf) {
  constexpr int NP = PanelsPerTile<T, MR>();
  auto tile_pf = [&pf] {
    const PrefetchRun run = pf;
    pf.next += pf.lines * kLineBytes;
    return run;
  };
  int64_t p = p_begin;
  for (; p + NP <= p_end; p += NP) {
    const int64_t o0 = p * kPanelWidth;
    PanelTile<T, MR, NP>(x, in, panels + o0 * in, y + o0, y_stride, std::min<int64_t>(NP * kPanelWidth, out - o0),
                         tile_pf());
  }
  for (; p < p_end; ++p) {
    const int64_t o0 = p * kPanelWidth;
    PanelTile<T, MR, 1>(x, in, panels + o0 * in, y + o0, y_stride, std::min<int64_t>(kPanelWidth, out - o0),
                        tile_pf());
  }
}

template <typename T, int MR = MaxRowsPerTile<T>()>
HWY_INLINE void DispatchRows(int n, const float* x, int64_t in, const T* panels, int64_t out, int64_t p_begin,
                             int64_t p_end, float* y, int64_t y_stride, PrefetchRun pf) {
  if constexpr (MR > 1) {
    if (n < MR) return DispatchRows<T, MR - 1>(n, x, in, panels, out, p_begin, p_end, y, y_stride, pf);
  }
  PanelRowGroup<T, MR>(x, in, panels, out, p_begin, p_end, y, y_stride, pf);
}

// Bytes of panels that stay in L2 while every group of x rows passes over them (L2: 512 KiB and up).
constexpr int64_t kPanelChunkBytes = 256 * 1024;

template <typename T>
void PanelMatMulT(const float* x, int rows, int64_t in, const T* panels, int64_t out, int64_t p_begin,
                  int64_t p_end, float* y, int64_t y_stride) {
  // Rows in groups as even as possible (16 rows: 5, 5, 6 on AVX2), so no group is left with too
  // few independent sums.
  constexpr int kMaxRows = MaxRowsPerTile<T>();
  const int groups = (rows + kMaxRows - 1) / kMaxRows;
  // Several groups: a chunk of panels is read from memory once and from L2 by the other groups.
  const int64_t chunk = groups == 1 ? p_end - p_begin
                                    : std::max<int64_t>(1, kPanelChunkBytes / (kPanelWidth * in * static_cast<int64_t>(sizeof(T))));
  // Only the first group's pass would read the chunk from memory, at a pace the memory cannot
  // keep (10 B per cycle per core for F32): instead every pass prefetches its share of the next chunk, so
  // the whole time of the chunk overlaps the transfer. Each tile prefetches one line per k step.
  const int64_t panel_lines = kPanelWidth * in * static_cast<int64_t>(sizeof(T)) / kLineBytes;
  for (int64_t c0 = p_begin; c0 < p_end; c0 += chunk) {
    const int64_t c1 = std::min(p_end, c0 + chunk);
    const int64_t next_lines = groups == 1 ? 0 : (std::min(p_end, c1 + chunk) - c1) * panel_lines;
    const int64_t tiles = c1 - c0;  // upper bound on the tiles of one pass (one panel per tile)
    PrefetchRun pf{reinterpret_cast<const char*>(panels + c1 * kPanelWidth * in), 0};
    pf.lines = std::min<int64_t>(in, (next_lines + groups * tiles - 1) / (groups * tiles));
    int r0 = 0;
    for (int g = 0; g < groups; ++g) {
      const int n = (rows - r0) / (groups - g);
      DispatchRows(n, x + r0 * in, in, panels, out, c0, c1, y + r0 * y_stride, y_stride, pf);
      pf.next += tiles * pf.lines * kLineBytes;
      r0 += n;
    }
  }
}

void PanelMatMul(const float* x, int rows, int64_t in, const void* panels, DType dtype, int64_t out, int64_t p_begin,
                 int64_t p_end, float* y, int64_t y_stride) {
  if (dtype == DType::kF32) {
    PanelMatMulT(x, rows, in, static_cast<const float*>(panels), out, p_begin, p_end, y, y_stride);
  } else if (dtype == DType::kBF16) {
    PanelMatMulT(x, rows, in, static_cast<const hwy::bfloat16_t*>(panels), out, p_begin, p_end, y, y_stride);
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace brickserve::cpu
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace brickserve::cpu {

HWY_EXPORT(PackPanels);
HWY_EXPORT(PanelMatMul);

void PackPanels(const void* w, DType dtype, int64_t out, int64_t in, int64_t p_begin, int64_t p_end, void* panels) {
  HWY_DYNAMIC_DISPATCH(PackPanels)(w, dtype, out, in, p_begin, p_end, panels);
}
void PanelMatMul(const float* x, int rows, int64_t in, const void* panels, DType dtype, int64_t out, int64_t p_begin,
                 int64_t p_end, float* y, int64_t y_stride) {
  HWY_DYNAMIC_DISPATCH(PanelMatMul)(x, rows, in, panels, dtype, out, p_begin, p_end, y, y_stride);
}

}  // namespace brickserve::cpu
#endif  // HWY_ONCE
