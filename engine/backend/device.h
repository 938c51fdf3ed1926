// The device interface: everything the model code asks of a backend (CPU now, CUDA later).
//
// The model code never dereferences device memory. It holds opaque handles (Weight, Buffer,
// KvCache) and calls the few ops a Llama block needs. Host-side metadata (token ids, positions,
// block tables) is passed as host spans; a GPU backend copies it up as part of the op.
// Activations are F32 row-major [rows, cols]; weights are F32/F16/BF16 in HF layout [out, in].
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/backend/dtype.h"

namespace brickserve {

// How a weight matrix is laid out in memory.
enum class WeightLayout : uint8_t {
  kRowMajor,  // [rows, cols], the checkpoint's layout
  kPanels16,  // CPU, F32/BF16: column panels of 16 rows, k-major (engine/backend/cpu/panel_kernels.h)
};

// A weight resident on a device: a matrix [rows, cols] or a vector (rows == 1).
struct Weight {
  DType dtype = DType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  WeightLayout layout = WeightLayout::kRowMajor;  // only MatMul reads other layouts
  const void* data = nullptr;   // device address
  std::shared_ptr<const void> owner;  // keeps the mapping or device allocation alive
  bool valid() const { return data != nullptr; }
};

// An F32 activation buffer on a device.
struct Buffer {
  float* data = nullptr;  // device address
  size_t size = 0;        // elements
  std::shared_ptr<void> owner;
};

// Host view of a tensor to upload (e.g. inside a memory-mapped safetensors file).
struct HostTensor {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  std::shared_ptr<const void> keep_alive;  // backends that use it in place hold on to this
  // The weight is only ever the `w` of MatMul: a backend may store it in the layout its products
  // read fastest instead of [rows, cols].
  bool matmul_only = false;
  // `data` lies in a read-only file mapping: a backend that keeps its own copy may drop the mapped
  // pages (they fault back in, unchanged, if anyone reads them again).
  bool file_mapped = false;
};

// Paged KV cache storage: `num_blocks` blocks of `block_size` token slots. A slot index is
// block * block_size + offset. Per slot and layer, K and V each hold kv_heads * head_dim values.
struct KvCacheSpec {
  int num_layers = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int block_size = 16;
  int num_blocks = 0;
  size_t bytes() const {
    return size_t{2} * num_layers * num_blocks * block_size * num_kv_heads * head_dim * sizeof(float);
  }
};

struct KvCache {
  KvCacheSpec spec;
  // Per layer, the K then the V slot array: [num_blocks * block_size, kv_heads * head_dim]. A backend
  // may order values within a block as its kernels prefer (the CPU keeps each block's K transposed).
  Buffer storage;
  // The K (which = 0) or V (which = 1) slot array of `layer` (a device address).
  float* LayerSlots(int layer, int which) const {
    const size_t kv_dim = static_cast<size_t>(spec.num_kv_heads) * spec.head_dim;
    const size_t slots_total = static_cast<size_t>(spec.num_blocks) * spec.block_size;
    return storage.data + (static_cast<size_t>(layer) * 2 + which) * slots_total * kv_dim;
  }
};

// One sequence's part of an attention call. Its queries are rows [q_begin, q_begin + q_len) of the
// batch; they sit at positions [context_len - q_len, context_len) and attend causally to all
// `context_len` tokens of the sequence, found through `block_table`.
struct AttentionSeq {
  int32_t q_begin = 0;
  int32_t q_len = 0;
  int32_t context_len = 0;
  std::span<const int32_t> block_table;
};

struct AttentionParams {
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  float scale = 1.0f;
};

// One adapter's share of a LoRA product (the SGMV/BGMV shape of Punica and S-LoRA): the batch rows
// that use the adapter, gathered so the adapter's matrices are read once for all of them.
// y[rows[i], :] += scale * row_weights[i] * Bᵀ-stored `b` applied to (a · x[rows[i], :]).
struct LoraSegment {
  const Weight* a = nullptr;  // [rank, in]
  const Weight* b = nullptr;  // [rank, out]: PEFT's B [out, rank] transposed, so the expand step
                              // streams contiguous rows (a sum of rank scaled rows, no dot products)
  float scale = 1.0f;         // lora_alpha / r (or / sqrt(r) with rsLoRA)
  std::span<const int32_t> rows;
  std::span<const float> row_weights;  // each request's weight for this adapter
};

// One group of a sparse FFN call (emergent modules): the FFN neurons `neurons` computed for the batch
// rows `rows`, e.g. one module and the rows whose router chose it, or one row and its own neurons.
struct FfnNeuronGroup {
  std::span<const int32_t> neurons;
  std::span<const int32_t> rows;
};

// A token whose logit the sampling penalties change: seen in the prompt or output (repetition
// penalty) and/or generated `output_count` times (presence and frequency penalties).
struct PenaltyToken {
  int32_t id = 0;
  int32_t output_count = 0;
  int32_t seen = 0;
};

// One row of SampleTokens: a request's sampling processors (Sampler's semantics) and the draw its
// host-side RNG made for this step, so a seed gives the same tokens on every backend.
struct SampleRow {
  float temperature = 0.0f;  // 0 = greedy
  int32_t top_k = 0;
  float top_p = 1.0f;
  float min_p = 0.0f;
  float repetition_penalty = 1.0f;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  double uniform = 0.0;  // in [0, 1); unused when greedy
  std::span<const PenaltyToken> penalties;  // each token once
};

class Device {
 public:
  virtual ~Device() = default;
  virtual std::string name() const = 0;

  // --- memory ---
  // Makes a weight usable by the ops. A backend may use host memory in place (CPU) or copy it.
  // Thread-safe against running ops: bricks are uploaded while the model serves.
  // 1-D tensors (norms, biases, RoPE frequencies) come back as F32 vectors, which is what the ops
  // that take them expect; 2-D ones keep their dtype.
  virtual absl::StatusOr<Weight> UploadWeight(const HostTensor& tensor) = 0;
  // Zero-filled.
  virtual absl::StatusOr<Buffer> AllocBuffer(size_t elements) = 0;
  virtual absl::StatusOr<KvCache> AllocKvCache(const KvCacheSpec& spec) = 0;
  // The host memory may be reused as soon as CopyToDevice returns. CopyToHost's data is there after
  // the next Synchronize(). Every op likewise copies what it needs of its host spans before it
  // returns, so callers may pass temporaries.
  virtual absl::Status CopyToDevice(std::span<const float> host, Buffer& dst, size_t dst_offset) = 0;
  virtual absl::Status CopyToHost(const Buffer& src, size_t src_offset, std::span<float> host) = 0;

  // --- ops (asynchronous on a GPU; Synchronize() waits) ---
  // out[i, :] = table[ids[i], :]
  virtual absl::Status Embed(const Weight& table, std::span<const int32_t> ids, Buffer& out) = 0;
  // out[r, :] = x[r, :] / rms(x[r, :]) * weight      (x and out may alias)
  virtual absl::Status RmsNorm(const Buffer& x, const Weight& weight, int rows, float eps,
                               Buffer& out) = 0;
  // out[rows, w.rows] = x[rows, w.cols] · wᵀ (+ bias)
  virtual absl::Status MatMul(const Buffer& x, int rows, const Weight& w, const Weight* bias,
                              Buffer& out) = 0;
  // Rotates the first `rotary_dim` (= head_dim) dims of each head, HF "rotate_half" layout. The
  // angle position * inv_freq is formed in double: in float it is off by ~1e-7 * position rad.
  // x is [rows, heads * head_dim]; inv_freq has head_dim / 2 entries.
  virtual absl::Status Rope(Buffer& x, int rows, int heads, int head_dim,
                            std::span<const int32_t> positions, const Weight& inv_freq) = 0;
  // Writes k/v rows ([rows, kv_heads * head_dim]) into the cache slots of `layer`.
  virtual absl::Status WriteKv(KvCache& cache, int layer, const Buffer& k, const Buffer& v,
                               std::span<const int32_t> slots) = 0;
  // out[rows, heads * head_dim] = softmax(q kᵀ * scale) v over each sequence's cached tokens.
  // Slots past a sequence's context_len are never read (their contents are unspecified).
  virtual absl::Status Attention(const Buffer& q, const KvCache& cache, int layer,
                                 std::span<const AttentionSeq> seqs, const AttentionParams& p,
                                 Buffer& out) = 0;
  // out[:n] = silu(gate[:n]) * up[:n]   (out may alias gate)
  virtual absl::Status SwiGlu(const Buffer& gate, const Buffer& up, size_t n, Buffer& out) = 0;
  // Adds each segment's low-rank product to the rows of y ([rows, out]) it names; x is [rows, in].
  // Segments are applied in order; a row may appear in several (a request combining adapters).
  virtual absl::Status AddLora(const Buffer& x, std::span<const LoraSegment> segments, Buffer& y) = 0;
  // The SwiGLU FFN over chosen neurons only. For every row r of `out_rows`:
  //   out[r, :] = sum over the groups holding r, in order, of
  //               sum over the group's neurons j, in order, of silu(gate_j · x_r) (up_j · x_r) down_t[j, :]
  // gate and up are [d_ff, hidden]; down_t is down_proj transposed, [d_ff, hidden], so a neuron's
  // output weights are one contiguous row. Every group row must be in `out_rows`; rows not in it
  // are left as they are (a row of `out_rows` in no group gets zeros). A row's result depends only on its own groups, never on the
  // other rows of the batch.
  virtual absl::Status SparseFfn(const Buffer& x, const Weight& gate, const Weight& up, const Weight& down_t,
                                 std::span<const FfnNeuronGroup> groups, std::span<const int32_t> out_rows,
                                 Buffer& out) = 0;
  // x[:n] += y[:n]
  virtual absl::Status Add(Buffer& x, const Buffer& y, size_t n) = 0;
  // Copies `n` floats from src[src_offset..] to dst[dst_offset..] on the device.
  virtual absl::Status Copy(const Buffer& src, size_t src_offset, Buffer& dst, size_t dst_offset,
                            size_t n) = 0;
  virtual absl::Status Synchronize() = 0;

  // --- sampling on the device (optional) ---
  // Whether SampleTokens is worth calling: a GPU returns the sampled ids instead of the logits.
  // The CPU samples on the host from the logits it already has.
  virtual bool samples_on_device() const { return false; }
  // Picks one token per row of logits [rows, vocab] (penalties applied in place) exactly as the
  // host Sampler does with the same draw, and waits for the ids (a synchronisation point).
  virtual absl::Status SampleTokens(Buffer& logits, int vocab, std::span<const SampleRow> rows,
                                    std::span<int32_t> ids) {
    (void)logits, (void)vocab, (void)rows, (void)ids;
    return absl::UnimplementedError(name() + " samples on the host");
  }
};

struct DeviceOptions {
  std::string kind = "cpu";  // "cpu" | "cuda" | "auto"
  int threads = 0;           // CPU worker threads; 0 = all cores
  // Every op computes each row the same way whatever the other rows of the call are, so a request
  // gets bit-identical output whether it runs alone or in any continuous batch. Off lets a
  // backend use faster library kernels (OpenBLAS SGEMM) whose rounding depends on the batch shape.
  bool batch_invariant = true;
};

// Creates the backend chosen at start-up.
absl::StatusOr<std::unique_ptr<Device>> CreateDevice(const DeviceOptions& options);

}  // namespace brickserve
