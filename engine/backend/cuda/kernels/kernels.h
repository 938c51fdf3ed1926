// Launchers of the CUDA backend's kernels. Plain C++ and the CUDA runtime only (no absl), so the .cu
// files stay small to compile; CudaDevice turns the cudaError_t results into absl::Status.
// Every pointer is a device address; index arrays were staged to the device by the caller.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "engine/backend/dtype.h"

namespace brickserve::cuda {

// --- elementwise.cu ---
cudaError_t Embed(const void* table, DType dtype, int64_t dim, const int32_t* ids, int n, float* out, cudaStream_t s);
cudaError_t RmsNorm(const float* x, const float* weight, int rows, int64_t dim, float eps, float* out, cudaStream_t s);
cudaError_t Rope(float* x, int rows, int heads, int head_dim, const int32_t* positions, const float* inv_freq,
                 cudaStream_t s);
// k_cache/v_cache: the layer's K and V slot arrays, each [slots, kv_dim].
cudaError_t WriteKv(float* k_cache, float* v_cache, const float* k, const float* v, const int32_t* slots, int n,
                    int64_t kv_dim, cudaStream_t s);
cudaError_t SwiGlu(const float* gate, const float* up, size_t n, float* out, cudaStream_t s);
cudaError_t Add(float* x, const float* y, size_t n, cudaStream_t s);
cudaError_t AddBias(float* y, const float* bias, int rows, int64_t cols, cudaStream_t s);
// F32 → F16/BF16, the input of a tensor-core GEMM.
cudaError_t ConvertF32(const float* x, size_t n, DType to, void* out, cudaStream_t s);

// --- matvec.cu ---
// y[r, o] = x[r, :] · w[o, :] (+ bias[o]) for r < rows, by warps over the weight rows, 16 rows per
// pass over the weights; each row's sum is computed the same way whatever `rows` is (batch
// invariant). Best for small `rows`.
cudaError_t MatVec(const float* x, int rows, const void* w, DType dtype, int64_t out_dim, int64_t in_dim,
                   const float* bias, float* y, cudaStream_t s);

// --- attention.cu ---
// One query row of an attention call: its batch row, how many positions it sees (causal: its own
// position + 1) and where its sequence's block table starts in the flattened tables.
struct AttentionRow {
  int32_t row;
  int32_t context;
  int32_t table_offset;
};
struct AttentionArgs {
  const float* q;       // [rows, heads * head_dim]
  const float* k_cache; // the layer's K slots [slots, kv_heads * head_dim]
  const float* v_cache;
  const int32_t* tables;
  int block_size;
  int num_heads;
  int num_kv_heads;
  int head_dim;
  float scale;
  float* out;           // [rows, heads * head_dim]
};
// Flash-decoding style, one thread block per (query row, KV head), online softmax over the row's
// positions; a row's result depends on nothing else in the batch.
cudaError_t AttentionRows(const AttentionArgs& a, const AttentionRow* rows, int n_rows, cudaStream_t s);
// One prefill chunk: tiles of queries against tiles of keys in shared memory, online softmax, no
// score matrix in memory. `q_begin`/`q_len`/`context` as in AttentionSeq; `table` is the sequence's.
cudaError_t AttentionPrefill(const AttentionArgs& a, int q_begin, int q_len, int context, const int32_t* table,
                             cudaStream_t s);
bool AttentionSupported(int head_dim, int group);

// --- lora.cu ---
// One adapter segment of an AddLora call, as staged to the device.
struct LoraSegmentArgs {
  const void* a;  // [rank, in]
  const void* b;  // [rank, out]
  DType a_dtype;
  DType b_dtype;
  int32_t rank;
  int32_t rows_begin;  // into the flattened rows / row weights
  int32_t count;
  int32_t t_offset;    // into the shrink output t, count * rank floats
  float scale;
};
// One output row's contribution: segment `segment`, its products at t[t_offset .. t_offset + rank).
struct LoraEntry {
  int32_t segment;
  int32_t t_offset;
};
// t = scale * row_weight * (A x[row]) for every (segment, row); then per output row, in segment
// order, y[row] += t · B. A row in several segments is updated by one thread per column, in order.
cudaError_t LoraShrink(const float* x, int64_t in, const LoraSegmentArgs* segs, int n_segs, int max_items,
                       const int32_t* rows, const float* row_weights, float* t, cudaStream_t s);
cudaError_t LoraExpand(const float* t, const LoraSegmentArgs* segs, const int32_t* out_rows, int n_out_rows,
                       const int32_t* entry_begin, const LoraEntry* entries, int64_t out, float* y, cudaStream_t s);

// --- sparse_ffn.cu ---
struct FfnGroupArgs {
  int32_t neurons_begin;  // into the flattened neuron ids
  int32_t n_neurons;
  int32_t rows_begin;     // into the flattened row ids
  int32_t n_rows;
  int64_t act_offset;     // into the activations, n_rows * n_neurons floats
};
// act[group][i][j] = silu(gate[neuron j] · x[row i]) * (up[neuron j] · x[row i]).
cudaError_t SparseFfnActivations(const float* x, int64_t hidden, const void* gate, const void* up, DType dtype,
                                 const FfnGroupArgs* groups, int n_groups, int max_items, const int32_t* neurons,
                                 const int32_t* rows, float* act, cudaStream_t s);
// out[row] = sum over the row's (group, index in group) entries, in order, of
// sum over the group's neurons, in order, of act * down_t[neuron].
struct FfnEntry {
  int32_t group;
  int32_t row_index;
};
cudaError_t SparseFfnDown(const float* act, const void* down_t, DType dtype, int64_t hidden, const FfnGroupArgs* groups,
                          const int32_t* neurons, const int32_t* out_rows, int n_out_rows, const int32_t* entry_begin,
                          const FfnEntry* entries, float* out, cudaStream_t s);

// --- sampling.cu ---
struct SampleRowArgs {
  float temperature;  // 0 = greedy
  int32_t top_k;
  float top_p;
  float min_p;
  float repetition_penalty;
  float presence_penalty;
  float frequency_penalty;
  double uniform;     // the host RNG's draw in [0, 1)
  int32_t pen_begin;  // into the flattened penalty tokens
  int32_t pen_count;
};
struct PenaltyArgs {
  int32_t id;
  int32_t output_count;
  int32_t seen;
};
// One token per row of logits [n_rows, vocab] (penalties applied in place); `probs` is scratch of
// n_rows * vocab doubles.
cudaError_t SampleTokens(float* logits, int vocab, const SampleRowArgs* rows, int n_rows, const PenaltyArgs* penalties,
                         double* probs, int32_t* ids, cudaStream_t s);

}  // namespace brickserve::cuda
