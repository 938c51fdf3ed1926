// Vectorised CPU kernels (Highway, dispatched at run time to the best instruction set).
#pragma once

#include <cstddef>
#include <cstdint>

#include "engine/backend/dtype.h"

namespace brickserve::cpu {

// y[r * y_stride + o] = dot(x[r * in .. + in], w[o * in .. + in]) for r < rows, o in [o_begin, o_end).
// `w` is an F32/F16/BF16 matrix [*, in]. Meant for small `rows` (decode); reads each weight row once
// per group of four x rows.
void MatVecRows(const float* x, int rows, int64_t in, const void* w, DType w_dtype, int64_t o_begin,
                int64_t o_end, float* y, int64_t y_stride);

// y[r][o] += sum_j t[r * k + j] * w[j * n + o] for r < rows, o in [o_begin, o_end): rows times a
// matrix [k, n] (F32/F16/BF16) with small k, e.g. a LoRA B stored transposed. No horizontal sums;
// each y element adds its k terms in order, whatever the other rows are (batch-invariant).
void AddRowsTimesMatrix(const float* t, int rows, int64_t k, const void* w, DType w_dtype, int64_t n,
                        int64_t o_begin, int64_t o_end, float* const* y);

// The sparse-FFN forms. y[r * y_stride + i] = dot(x[r], w[ids[i] * in .. + in]) for r < rows,
// i < n_ids: x rows by pointer, weight rows gathered by id; same sums as MatVecRows, row by row.
void MatVecGathered(const float* const* x, int rows, int64_t in, const void* w, DType w_dtype,
                    const int32_t* ids, int64_t n_ids, float* y, int64_t y_stride);
// AddRowsTimesMatrix with w's row j read from row ids[j] of a matrix [*, n]; without `accumulate`
// y's old values are ignored (y = the sum).
void RowsTimesGatheredRows(const float* t, int rows, int64_t k, const void* w, DType w_dtype, int64_t n,
                           const int32_t* ids, int64_t o_begin, int64_t o_end, float* const* y, bool accumulate);

// out[i] = float(src[i]) for F32/F16/BF16 `src`.
void ConvertToF32(const void* src, DType dtype, size_t n, float* out);

// One query row's attention for the `group` query heads that share one KV head (GQA): positions
// [0, n) in the blocks block_table[t / block_size]. The CPU cache keeps each block's K transposed
// and V by slot: for slot j of block b, K dim c is k[b * block_size * kv_stride + c * block_size + j]
// (k already offset to this KV head's first dim: kvh * head_dim * block_size) and V row j starts at
// v + (b * block_size + j) * kv_stride (v offset to kvh * head_dim). q and out hold `group` heads of
// `head_dim` floats back to back; `scores` is scratch for group * n floats. One call per (row, KV
// head): the per-position work stays inside one dispatched kernel.
void AttendKvHead(const float* q, int group, int head_dim, float scale, const float* k, const float* v,
                  size_t kv_stride, const int32_t* block_table, int block_size, size_t n, float* scores, float* out);

// out[i] = silu(gate[i]) * up[i]   (out may alias gate)
void SiluMul(const float* gate, const float* up, size_t n, float* out);

// x[0..valid) = softmax(x[0..valid)); x[valid..n) = 0 (masked positions).
void SoftmaxPrefix(float* x, size_t n, size_t valid);

}  // namespace brickserve::cpu
