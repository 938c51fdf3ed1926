// F32 matrix products on weights packed into column panels: the layout a GEMM micro-kernel reads
// (broadcast one x element, multiply a vector of 16 outputs' weights). Each output adds its `in`
// products one after the other, k = 0, 1, ..., in every kernel here whatever the row count, so a
// row's result never depends on the batch (batch invariance) and the same code serves decode and
// prefill.
#pragma once

#include <cstddef>
#include <cstdint>

namespace brickserve::cpu {

// Outputs per panel. A panel holds its outputs' weights k-major: panel[k * 16 + j] = w[o0 + j][k].
constexpr int64_t kPanelWidth = 16;

inline int64_t NumPanels(int64_t out) { return (out + kPanelWidth - 1) / kPanelWidth; }
// Floats of the packed form of an [out, in] matrix (the last panel zero padded).
inline size_t PackedPanelsSize(int64_t out, int64_t in) {
  return static_cast<size_t>(NumPanels(out) * kPanelWidth * in);
}

// Packs panels [p_begin, p_end) of the row-major F32 matrix w [out, in] into `panels`
// (PackedPanelsSize floats for the whole matrix; panel p starts at p * 16 * in).
void PackPanels(const float* w, int64_t out, int64_t in, int64_t p_begin, int64_t p_end, float* panels);

// y[r * y_stride + o] = dot(x[r * in .. + in], w[o]) for r < rows and the outputs o < out of panels
// [p_begin, p_end).
void PanelMatMul(const float* x, int rows, int64_t in, const float* panels, int64_t out, int64_t p_begin,
                 int64_t p_end, float* y, int64_t y_stride);

}  // namespace brickserve::cpu
