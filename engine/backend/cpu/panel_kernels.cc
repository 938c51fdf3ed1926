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

using DF = hn::ScalableTag<float>;

void PackPanels(const float* HWY_RESTRICT w, int64_t out, int64_t in, int64_t p_begin, int64_t p_end,
                float* HWY_RESTRICT panels) {
  for (int64_t p = p_begin; p < p_end; ++p) {
    float* HWY_RESTRICT dst = panels + p * kPanelWidth * in;
    for (int64_t j = 0; j < kPanelWidth; ++j) {
      const int64_t o = p * kPanelWidth + j;
      if (o >= out) {
        for (int64_t k = 0; k < in; ++k) dst[k * kPanelWidth + j] = 0.0f;
        continue;
      }
      const float* HWY_RESTRICT row = w + o * in;
      for (int64_t k = 0; k < in; ++k) dst[k * kPanelWidth + j] = row[k];
    }
  }
}

constexpr size_t kLanes = hn::MaxLanes(DF());
// Vectors per panel (2 on AVX2, 1 on AVX-512).
constexpr int kVecsPerPanel = static_cast<int>(kPanelWidth / std::min<size_t>(kLanes, kPanelWidth));
// Accumulator registers a tile may use, leaving room for the weight vectors and the broadcast x.
#if HWY_TARGET <= HWY_AVX3
constexpr int kAccRegs = 24;
#else
constexpr int kAccRegs = 12;
#endif
constexpr int kMaxRowsPerTile = std::max(1, kAccRegs / std::max(1, (kVecsPerPanel < 2 ? 2 : 1) * kVecsPerPanel));
// Panels per tile for MR rows: enough independent sums to keep the FMA units busy at few rows.
template <int MR>
constexpr int PanelsPerTile() {
  return std::clamp(kAccRegs / (MR * kVecsPerPanel), 1, 4);
}

// Cache lines to prefetch while a tile runs: one per k step, from `next` on.
struct PrefetchRun {
  const char* next = nullptr;
  int64_t lines = 0;
};

constexpr int64_t kLineBytes = 64;

// MR x rows (x_stride apart) times NP panels: acc[r][v] adds x[r][k] * panel[k][v-th vector] for
// k = 0 .. in-1 in order, one lane per output. `valid` = outputs of the tile that exist.
template <int MR, int NP>
HWY_INLINE void PanelTile(const float* HWY_RESTRICT x, int64_t in, const float* HWY_RESTRICT panels, float* HWY_RESTRICT y,
                          int64_t y_stride, int64_t valid, PrefetchRun pf) {
  const DF df;
  constexpr int NV = NP * kVecsPerPanel;
  constexpr int64_t N = static_cast<int64_t>(kLanes);
  const int64_t panel_stride = kPanelWidth * in;
  hn::Vec<DF> acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = hn::Zero(df);
  for (int64_t k = 0; k < in; ++k) {
    if (k < pf.lines) hwy::Prefetch(pf.next + k * kLineBytes);
    hn::Vec<DF> wv[NV];
    for (int p = 0; p < NP; ++p)
      for (int v = 0; v < kVecsPerPanel; ++v)
        wv[p * kVecsPerPanel + v] = hn::Load(df, panels + p * panel_stride + k * kPanelWidth + v * N);
    for (int r = 0; r < MR; ++r) {
      const auto xb = hn::Set(df, x[r * in + k]);
      for (int v = 0; v < NV; ++v) acc[r][v] = hn::MulAdd(wv[v], xb, acc[r][v]);
    }
  }
  constexpr int64_t kTileWidth = NP * kPanelWidth;
  if (valid == kTileWidth) {
    for (int r = 0; r < MR; ++r)
      for (int v = 0; v < NV; ++v) hn::StoreU(acc[r][v], df, y + r * y_stride + v * N);
    return;
  }
  HWY_ALIGN float tmp[kTileWidth];
  for (int r = 0; r < MR; ++r) {
    for (int v = 0; v < NV; ++v) hn::Store(acc[r][v], df, tmp + v * N);
    std::memcpy(y + r * y_stride, tmp, static_cast<size_t>(valid) * sizeof(float));
  }
}

// `pf`: lines to prefetch over the whole pass, `pf.lines` per tile.
template <int MR>
HWY_INLINE void PanelRowGroup(const float* x, int64_t in, const float* panels, int64_t out, int64_t p_begin,
                              int64_t p_end, float* y, int64_t y_stride, PrefetchRun pf) {
  constexpr int NP = PanelsPerTile<MR>();
  auto tile_pf = [&pf] {
    const PrefetchRun run = pf;
    pf.next += pf.lines * kLineBytes;
    return run;
  };
  int64_t p = p_begin;
  for (; p + NP <= p_end; p += NP) {
    const int64_t o0 = p * kPanelWidth;
    PanelTile<MR, NP>(x, in, panels + o0 * in, y + o0, y_stride, std::min<int64_t>(NP * kPanelWidth, out - o0),
                      tile_pf());
  }
  for (; p < p_end; ++p) {
    const int64_t o0 = p * kPanelWidth;
    PanelTile<MR, 1>(x, in, panels + o0 * in, y + o0, y_stride, std::min<int64_t>(kPanelWidth, out - o0), tile_pf());
  }
}

template <int MR = kMaxRowsPerTile>
HWY_INLINE void DispatchRows(int n, const float* x, int64_t in, const float* panels, int64_t out, int64_t p_begin,
                             int64_t p_end, float* y, int64_t y_stride, PrefetchRun pf) {
  if constexpr (MR > 1) {
    if (n < MR) return DispatchRows<MR - 1>(n, x, in, panels, out, p_begin, p_end, y, y_stride, pf);
  }
  PanelRowGroup<MR>(x, in, panels, out, p_begin, p_end, y, y_stride, pf);
}

// Bytes of panels that stay in L2 while every group of x rows passes over them (L2: 512 KiB and up).
constexpr int64_t kPanelChunkBytes = 256 * 1024;

void PanelMatMul(const float* x, int rows, int64_t in, const float* panels, int64_t out, int64_t p_begin,
                 int64_t p_end, float* y, int64_t y_stride) {
  // Rows in groups as even as possible (16 rows: 5, 5, 6 on AVX2), so no group is left with too
  // few independent sums.
  const int groups = (rows + kMaxRowsPerTile - 1) / kMaxRowsPerTile;
  // Several groups: a chunk of panels is read from memory once and from L2 by the other groups.
  const int64_t chunk = groups == 1 ? p_end - p_begin
                                    : std::max<int64_t>(1, kPanelChunkBytes / (kPanelWidth * in * 4));
  // Only the first group's pass would read the chunk from memory, at a pace the memory cannot
  // keep (~10 B per cycle per core): instead every pass prefetches its share of the next chunk, so
  // the whole time of the chunk overlaps the transfer. Each tile prefetches one line per k step.
  const int64_t panel_lines = kPanelWidth * in * 4 / kLineBytes;
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

}  // namespace HWY_NAMESPACE
}  // namespace brickserve::cpu
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace brickserve::cpu {

HWY_EXPORT(PackPanels);
HWY_EXPORT(PanelMatMul);

void PackPanels(const float* w, int64_t out, int64_t in, int64_t p_begin, int64_t p_end, float* panels) {
  HWY_DYNAMIC_DISPATCH(PackPanels)(w, out, in, p_begin, p_end, panels);
}
void PanelMatMul(const float* x, int rows, int64_t in, const float* panels, int64_t out, int64_t p_begin,
                 int64_t p_end, float* y, int64_t y_stride) {
  HWY_DYNAMIC_DISPATCH(PanelMatMul)(x, rows, in, panels, out, p_begin, p_end, y, y_stride);
}

}  // namespace brickserve::cpu
#endif  // HWY_ONCE
