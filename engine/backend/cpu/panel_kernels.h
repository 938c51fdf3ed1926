// Matrix products on F32 or BF16 weights packed into column panels: the layout a GEMM micro-kernel reads
// (broadcast one x element, multiply a vector of 16 outputs' weights). Each output adds its `in`
// products one after the other, k = 0, 1, ..., in every kernel here whatever the row count, so a
// row's result never depends on the batch (batch invariance) and the same code serves decode and
// prefill.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>

#include "engine/backend/dtype.h"

namespace brickserve::cpu {

// Outputs per panel. A panel holds its outputs' weights k-major: the 16 weights of k, then of k + 1
// (F32: in output order; BF16: output i and 8 + i side by side, so one 32-byte load widens to two
// float vectors with a shift and a mask).
constexpr int64_t kPanelWidth = 16;

inline int64_t NumPanels(int64_t out) { return (out + kPanelWidth - 1) / kPanelWidth; }
// Whether `dtype` has a packed form (F32, BF16).
inline bool HasPanels(DType dtype) { return dtype == DType::kF32 || dtype == DType::kBF16; }
// Bytes of the packed form of an [out, in] matrix (the last panel zero padded).
inline size_t PackedPanelsBytes(int64_t out, int64_t in, DType dtype) {
  return static_cast<size_t>(NumPanels(out) * kPanelWidth * in) * DTypeSize(dtype);
}

// Storage for a packed matrix, 64-byte aligned (the kernels load whole panel vectors); null when
// the allocation fails.
struct FreePanels {
  void operator()(void* p) const { std::free(p); }
};
using PanelStorage = std::unique_ptr<void, FreePanels>;
inline PanelStorage AllocatePanels(int64_t out, int64_t in, DType dtype) {
  return PanelStorage(std::aligned_alloc(64, (PackedPanelsBytes(out, in, dtype) + 63) / 64 * 64));
}

// Packs panels [p_begin, p_end) of the row-major matrix w [out, in] (F32 or BF16) into `panels`
// (PackedPanelsBytes for the whole matrix, 64-byte aligned; panel p starts at element p * 16 * in).
void PackPanels(const void* w, DType dtype, int64_t out, int64_t in, int64_t p_begin, int64_t p_end, void* panels);

// y[r * y_stride + o] = dot(x[r * in .. + in], w[o]) for r < rows and the outputs o < out of panels
// [p_begin, p_end).
void PanelMatMul(const float* x, int rows, int64_t in, const void* panels, DType dtype, int64_t out, int64_t p_begin,
                 int64_t p_end, float* y, int64_t y_stride);

}  // namespace brickserve::cpu
