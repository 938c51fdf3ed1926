// The CUDA backend: weights uploaded once (F32/F16/BF16 as stored), F32 activations, one stream.
// Matrix products: a weight-streaming warp kernel for few rows (decode) and, unless batch
// invariance is asked for, cuBLAS for prefill. Attention reads the paged KV cache in place.
// Ops are asynchronous: the host metadata they take is staged through pinned memory and
// Synchronize() waits for the stream.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/backend/cuda/cuda_staging.h"
#include "engine/backend/cuda/kernels/kernels.h"
#include "engine/backend/device.h"

namespace brickserve {

class CudaDevice final : public Device {
 public:
  // FAILED_PRECONDITION when no usable GPU is present (no device, no driver, too old a GPU).
  static absl::StatusOr<std::unique_ptr<CudaDevice>> Create(const DeviceOptions& options);
  ~CudaDevice() override;
  std::string name() const override { return name_; }

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
  absl::Status Attention(const Buffer& q, const KvCache& cache, int layer, std::span<const AttentionSeq> seqs,
                         const AttentionParams& p, Buffer& out) override;
  absl::Status SwiGlu(const Buffer& gate, const Buffer& up, size_t n, Buffer& out) override;
  absl::Status AddLora(const Buffer& x, std::span<const LoraSegment> segments, Buffer& y) override;
  absl::Status SparseFfn(const Buffer& x, const Weight& gate, const Weight& up, const Weight& down_t,
                         std::span<const FfnNeuronGroup> groups, std::span<const int32_t> out_rows,
                         Buffer& out) override;
  absl::Status Add(Buffer& x, const Buffer& y, size_t n) override;
  absl::Status Copy(const Buffer& src, size_t src_offset, Buffer& dst, size_t dst_offset, size_t n) override;
  absl::Status Synchronize() override;
  bool samples_on_device() const override { return true; }
  absl::Status SampleTokens(Buffer& logits, int vocab, std::span<const SampleRow> rows,
                            std::span<int32_t> ids) override;

 private:
  CudaDevice() = default;
  // Without batch invariance, products of more rows than this go to cuBLAS and prefill chunks of
  // at least kPrefillKernelMinRows queries to the tiled attention kernel.
  static constexpr int kMatVecMaxRows = 16;
  static constexpr int kPrefillKernelMinRows = 16;
  absl::Status Gemm(const Buffer& x, int rows, const Weight& w, Buffer& out);

  int device_ = 0;
  bool batch_invariant_ = true;
  std::string name_;
  cudaStream_t stream_ = nullptr;         // every op
  cudaStream_t upload_stream_ = nullptr;  // weights and allocations, from any thread
  cublasHandle_t cublas_ = nullptr;
  std::unique_ptr<CudaStaging> staging_;
  std::unique_ptr<CudaScratch> gemm_input_, lora_t_, ffn_act_, copy_tmp_, sample_probs_, sample_ids_;
  // Host tables rebuilt per op (kept to avoid allocations per layer).
  std::vector<cuda::AttentionRow> attn_rows_;
  std::vector<int32_t> attn_tables_;
  std::vector<cuda::LoraSegmentArgs> lora_segs_;
  std::vector<int32_t> lora_rows_, lora_out_rows_, lora_entry_begin_;
  std::vector<float> lora_row_weights_;
  std::vector<cuda::LoraEntry> lora_entries_;
  std::vector<std::pair<int32_t, cuda::LoraEntry>> lora_by_row_;  // (output row, entry)
  std::vector<cuda::FfnGroupArgs> ffn_groups_;
  std::vector<int32_t> ffn_neurons_, ffn_rows_, ffn_entry_begin_;
  std::vector<cuda::FfnEntry> ffn_entries_;
  std::vector<std::pair<int32_t, cuda::FfnEntry>> ffn_by_row_;  // (output row, entry)
  std::vector<cuda::SampleRowArgs> sample_rows_;
  std::vector<cuda::PenaltyArgs> sample_penalties_;
};

}  // namespace brickserve
