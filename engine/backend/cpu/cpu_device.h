// The CPU backend: the reference implementation of the device interface and the fallback when no
// GPU is present. F32/BF16 projection weights are packed into column panels at load (panel_kernels.h);
// other weights are used in place from the memory-mapped checkpoint. Matrix products run on Highway
// kernels, or OpenBLAS SGEMM for prefill without batch invariance, spread over all cores.
#pragma once

#include <memory>

#include "engine/backend/device.h"
#include "engine/util/thread_pool.h"

namespace brickserve {

class CpuDevice final : public Device {
 public:
  CpuDevice(int threads, bool batch_invariant);
  std::string name() const override;

  absl::StatusOr<Weight> UploadWeight(const HostTensor& tensor) override;
  absl::StatusOr<Buffer> AllocBuffer(size_t elements) override;
  absl::StatusOr<KvCache> AllocKvCache(const KvCacheSpec& spec) override;
  absl::Status CopyToDevice(std::span<const float> host, Buffer& dst, size_t dst_offset) override;
  absl::Status CopyToHost(const Buffer& src, size_t src_offset, std::span<float> host) override;

  absl::Status Embed(const Weight& table, std::span<const int32_t> ids, Buffer& out) override;
  absl::Status RmsNorm(const Buffer& x, const Weight& weight, int rows, float eps, Buffer& out) override;
  absl::Status MatMul(const Buffer& x, int rows, const Weight& w, const Weight* bias, Buffer& out) override;
  absl::Status Rope(Buffer& x, int rows, int heads, int head_dim, std::span<const int32_t> positions,
                    const Weight& inv_freq) override;
  absl::Status WriteKv(KvCache& cache, int layer, const Buffer& k, const Buffer& v,
                       std::span<const int32_t> slots) override;
  absl::Status Attention(const Buffer& q, const KvCache& cache, int layer,
                         std::span<const AttentionSeq> seqs, const AttentionParams& p, Buffer& out) override;
  absl::Status SwiGlu(const Buffer& gate, const Buffer& up, size_t n, Buffer& out) override;
  absl::Status AddLora(const Buffer& x, std::span<const LoraSegment> segments, Buffer& y) override;
  absl::Status SparseFfn(const Buffer& x, const Weight& gate, const Weight& up, const Weight& down_t,
                         std::span<const FfnNeuronGroup> groups, std::span<const int32_t> out_rows,
                         Buffer& out) override;
  absl::Status Add(Buffer& x, const Buffer& y, size_t n) override;
  absl::Status Copy(const Buffer& src, size_t src_offset, Buffer& dst, size_t dst_offset, size_t n) override;
  absl::Status Synchronize() override { return absl::OkStatus(); }
  // The host Sampler's code; the engine samples from host logits directly (samples_on_device is
  // false), this serves callers that hold logits in a Buffer, such as the conformance tests.
  absl::Status SampleTokens(Buffer& logits, int vocab, std::span<const SampleRow> rows,
                            std::span<int32_t> ids) override;

 private:
  // Without batch invariance: above this many rows a product goes to SGEMM, below to the
  // row-wise kernel; sequences with at least kGemmAttentionMinRows new tokens (prefill chunks) take
  // the SGEMM attention path. With it, every row takes the row-wise kernels.
  static constexpr int kGemmMinRows = 8;
  static constexpr int kGemmAttentionMinRows = 16;
  absl::Status Gemm(const float* x, int rows, const Weight& w, float* y);
  // An F32/BF16 matrix used only by MatMul, copied into column panels.
  static absl::StatusOr<Weight> PackForMatMul(const HostTensor& t, Weight w);
  static void DropMappedPages(const void* data, size_t bytes);
  void AttentionRows(const Buffer& q, const KvCache& cache, int layer, std::span<const AttentionSeq> seqs,
                     const AttentionParams& p, Buffer& out);
  void AttentionGemm(const Buffer& q, const KvCache& cache, int layer, const AttentionSeq& seq,
                     const AttentionParams& p, Buffer& out);

  ThreadPool pool_;
  const bool batch_invariant_;
  std::vector<float> attn_k_, attn_v_;  // prefill attention: the sequence's K/V gathered contiguously
  std::vector<float> lora_x_, lora_t_;  // AddLora: the gathered rows, their rank-wide products
  std::vector<float*> lora_y_rows_;     // AddLora: the output rows of the segment
  // SparseFfn: one part = up to 64 neurons of a group, with its partial outputs [group rows, H].
  struct FfnPart {
    const FfnNeuronGroup* group;
    const int32_t* neurons;
    size_t count;
    size_t partial;  // offset in ffn_partials_
  };
  std::vector<FfnPart> ffn_parts_;
  std::vector<float> ffn_partials_;
  std::vector<std::vector<const float*>> ffn_row_partials_;  // per output row, its partials in order
};

}  // namespace brickserve
