#include "engine/backend/cuda/cuda_device.h"

#include <cuda_fp16.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "engine/backend/buffer_checks.h"
#include "engine/backend/cuda/cuda_status.h"
#include "engine/util/status_macros.h"

namespace brickserve {
namespace {

absl::Status CheckF32Vector(const Weight& w, int64_t n, const char* what) {
  if (w.dtype != DType::kF32 || w.rows * w.cols < n) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": expects an F32 vector of ", n, " values"));
  }
  return absl::OkStatus();
}

// Norms, biases and RoPE frequencies are widened to F32 once, on the host.
void WidenToF32(const void* src, DType dtype, size_t n, float* out) {
  const auto* h = static_cast<const uint16_t*>(src);
  for (size_t i = 0; i < n; ++i) {
    if (dtype == DType::kBF16) {
      const uint32_t bits = static_cast<uint32_t>(h[i]) << 16;
      std::memcpy(&out[i], &bits, sizeof(float));
    } else {
      __half_raw raw;
      raw.x = h[i];
      out[i] = __half2float(__half(raw));
    }
  }
}

// Device memory released with cudaFree when the last handle goes.
std::shared_ptr<void> DeviceOwner(void* p) {
  return std::shared_ptr<void>(p, [](void* q) { cudaFree(q); });
}

}  // namespace

absl::StatusOr<std::unique_ptr<CudaDevice>> CudaDevice::Create(const DeviceOptions& options) {
  int count = 0;
  if (cudaError_t e = cudaGetDeviceCount(&count); e != cudaSuccess || count == 0) {
    cudaGetLastError();  // clear the error so later runtime calls do not report it
    return absl::FailedPreconditionError(absl::StrCat(
        "device \"cuda\": no usable CUDA GPU (",
        e != cudaSuccess ? absl::StrCat(cudaGetErrorName(e), ": ", cudaGetErrorString(e)) : "0 devices", ")"));
  }
  auto d = std::unique_ptr<CudaDevice>(new CudaDevice());
  d->batch_invariant_ = options.batch_invariant;
  BS_CUDA_RETURN_IF_ERROR(cudaSetDevice(d->device_), "cudaSetDevice");
  cudaDeviceProp prop{};
  BS_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, d->device_), "cudaGetDeviceProperties");
  if (prop.major < 8) {
    return absl::FailedPreconditionError(absl::StrCat("device \"cuda\": ", prop.name, " is sm_", prop.major,
                                                      prop.minor, "; brickserve is built for sm_80 and newer"));
  }
  BS_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&d->stream_, cudaStreamNonBlocking), "cudaStreamCreate");
  BS_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&d->upload_stream_, cudaStreamNonBlocking), "cudaStreamCreate");
  BS_CUBLAS_RETURN_IF_ERROR(cublasCreate(&d->cublas_), "cublasCreate");
  BS_CUBLAS_RETURN_IF_ERROR(cublasSetStream(d->cublas_, d->stream_), "cublasSetStream");
  d->staging_ = std::make_unique<CudaStaging>(d->stream_);
  d->gemm_input_ = std::make_unique<CudaScratch>(d->stream_);
  d->lora_t_ = std::make_unique<CudaScratch>(d->stream_);
  d->ffn_act_ = std::make_unique<CudaScratch>(d->stream_);
  d->copy_tmp_ = std::make_unique<CudaScratch>(d->stream_);
  d->sample_probs_ = std::make_unique<CudaScratch>(d->stream_);
  d->sample_ids_ = std::make_unique<CudaScratch>(d->stream_);
  d->name_ = absl::StrCat("cuda:", d->device_, " (", prop.name, ", sm_", prop.major, prop.minor, ", ",
                          prop.totalGlobalMem >> 30, " GiB", d->batch_invariant_ ? ", batch-invariant" : "", ")");
  return d;
}

CudaDevice::~CudaDevice() {
  if (stream_ != nullptr) cudaStreamSynchronize(stream_);
  staging_.reset();
  gemm_input_.reset();
  lora_t_.reset();
  ffn_act_.reset();
  copy_tmp_.reset();
  sample_probs_.reset();
  sample_ids_.reset();
  if (cublas_ != nullptr) cublasDestroy(cublas_);
  if (upload_stream_ != nullptr) cudaStreamDestroy(upload_stream_);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

// --- memory ---

absl::StatusOr<Weight> CudaDevice::UploadWeight(const HostTensor& t) {
  if (t.shape.empty() || t.shape.size() > 2) {
    return absl::InvalidArgumentError(absl::StrCat("weights must be 1-D or 2-D, got ", t.shape.size(), "-D"));
  }
  if (t.dtype != DType::kF32 && t.dtype != DType::kF16 && t.dtype != DType::kBF16) {
    return absl::InvalidArgumentError(absl::StrCat("weights must be F32, F16 or BF16, got ", DTypeName(t.dtype)));
  }
  Weight w;
  w.rows = t.shape.size() == 2 ? t.shape[0] : 1;
  w.cols = t.shape.back();
  const size_t n = static_cast<size_t>(w.rows * w.cols);
  // Vectors (norms, biases, RoPE frequencies) are widened to F32, as on the CPU; matrices keep
  // their dtype and are converted in the kernels.
  std::vector<float> widened;
  const void* src = t.data;
  w.dtype = t.dtype;
  if (t.shape.size() == 1 && t.dtype != DType::kF32) {
    widened.resize(n);
    WidenToF32(t.data, t.dtype, n, widened.data());
    src = widened.data();
    w.dtype = DType::kF32;
  }
  const size_t bytes = n * DTypeSize(w.dtype);
  void* p = nullptr;
  if (cudaError_t e = cudaMalloc(&p, std::max<size_t>(bytes, 1)); e != cudaSuccess) {
    return absl::ResourceExhaustedError(absl::StrCat("CUDA: cannot allocate ", bytes, " bytes of GPU memory for a [",
                                                     w.rows, ", ", w.cols, "] ", DTypeName(w.dtype),
                                                     " weight: ", cudaGetErrorString(e)));
  }
  std::shared_ptr<void> owner = DeviceOwner(p);
  // Its own stream: bricks upload from other threads while the model serves.
  BS_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(p, src, bytes, cudaMemcpyHostToDevice, upload_stream_), "UploadWeight");
  BS_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(upload_stream_), "UploadWeight");
  w.data = p;
  w.owner = std::move(owner);
  return w;
}

absl::StatusOr<Buffer> CudaDevice::AllocBuffer(size_t elements) {
  void* p = nullptr;
  const size_t bytes = std::max<size_t>(elements, 1) * sizeof(float);
  if (cudaError_t e = cudaMalloc(&p, bytes); e != cudaSuccess) {
    return absl::ResourceExhaustedError(
        absl::StrCat("CUDA: cannot allocate ", elements, " floats of GPU memory: ", cudaGetErrorString(e)));
  }
  Buffer b;
  b.owner = DeviceOwner(p);
  b.data = static_cast<float*>(p);
  b.size = elements;
  BS_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(p, 0, bytes, upload_stream_), "AllocBuffer");
  BS_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(upload_stream_), "AllocBuffer");
  return b;
}

absl::StatusOr<KvCache> CudaDevice::AllocKvCache(const KvCacheSpec& spec) {
  KvCache cache;
  cache.spec = spec;
  BS_ASSIGN_OR_RETURN(cache.storage, AllocBuffer(spec.bytes() / sizeof(float)));
  return cache;
}

absl::Status CudaDevice::CopyToDevice(std::span<const float> host, Buffer& dst, size_t dst_offset) {
  BS_RETURN_IF_ERROR(CheckSize(dst, dst_offset + host.size(), "CopyToDevice"));
  // From pageable memory the call returns once the data is staged, so the caller may reuse it.
  BS_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(dst.data + dst_offset, host.data(), host.size_bytes(), cudaMemcpyHostToDevice, stream_),
      "CopyToDevice");
  return absl::OkStatus();
}

absl::Status CudaDevice::CopyToHost(const Buffer& src, size_t src_offset, std::span<float> host) {
  BS_RETURN_IF_ERROR(CheckSize(src, src_offset + host.size(), "CopyToHost"));
  BS_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(host.data(), src.data + src_offset, host.size_bytes(), cudaMemcpyDeviceToHost, stream_),
      "CopyToHost");
  return absl::OkStatus();
}

absl::Status CudaDevice::Synchronize() {
  BS_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_), "Synchronize");
  staging_->Reset();
  return absl::OkStatus();
}

// --- ops ---

absl::Status CudaDevice::Embed(const Weight& table, std::span<const int32_t> ids, Buffer& out) {
  BS_RETURN_IF_ERROR(CheckSize(out, ids.size() * table.cols, "Embed"));
  for (int32_t id : ids) {
    if (id < 0 || id >= table.rows) {
      return absl::OutOfRangeError(absl::StrCat("token id ", id, " is outside the vocabulary of ", table.rows));
    }
  }
  BS_ASSIGN_OR_RETURN(const int32_t* d_ids, staging_->PutOnly(ids));
  BS_CUDA_RETURN_IF_ERROR(cuda::Embed(table.data, table.dtype, table.cols, d_ids, static_cast<int>(ids.size()),
                                      out.data, stream_),
                          "Embed");
  return absl::OkStatus();
}

absl::Status CudaDevice::RmsNorm(const Buffer& x, const Weight& weight, int rows, float eps, Buffer& out) {
  const int64_t dim = weight.cols;
  BS_RETURN_IF_ERROR(CheckF32Vector(weight, dim, "RmsNorm weight"));
  BS_RETURN_IF_ERROR(CheckSize(x, static_cast<size_t>(rows) * dim, "RmsNorm input"));
  BS_RETURN_IF_ERROR(CheckSize(out, static_cast<size_t>(rows) * dim, "RmsNorm"));
  BS_CUDA_RETURN_IF_ERROR(
      cuda::RmsNorm(x.data, static_cast<const float*>(weight.data), rows, dim, eps, out.data, stream_), "RmsNorm");
  return absl::OkStatus();
}

absl::Status CudaDevice::Gemm(const Buffer& x, int rows, const Weight& w, Buffer& out) {
  // Row-major y[rows, out] = x[rows, in] · wᵀ is, column-major, y[out, rows] = w[in, out]ᵀ · x[in, rows].
  const int m = static_cast<int>(w.rows), n = rows, k = static_cast<int>(w.cols);
  const float one = 1.0f, zero = 0.0f;
  if (w.dtype == DType::kF32) {
    BS_CUBLAS_RETURN_IF_ERROR(cublasSgemm(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one,
                                          static_cast<const float*>(w.data), k, x.data, k, &zero, out.data, m),
                              "MatMul (cublasSgemm)");
    return absl::OkStatus();
  }
  // Tensor cores take both inputs in the weight's 16-bit type: the activations are rounded to it
  // (as frameworks running BF16 models do); products accumulate in F32 and land in F32.
  const cudaDataType_t type = w.dtype == DType::kBF16 ? CUDA_R_16BF : CUDA_R_16F;
  const size_t n_in = static_cast<size_t>(rows) * k;
  BS_ASSIGN_OR_RETURN(void* x16, gemm_input_->Get(n_in * 2));
  BS_CUDA_RETURN_IF_ERROR(cuda::ConvertF32(x.data, n_in, w.dtype, x16, stream_), "MatMul (convert input)");
  BS_CUBLAS_RETURN_IF_ERROR(cublasGemmEx(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one, w.data, type, k, x16, type,
                                         k, &zero, out.data, CUDA_R_32F, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                            "MatMul (cublasGemmEx)");
  return absl::OkStatus();
}

absl::Status CudaDevice::MatMul(const Buffer& x, int rows, const Weight& w, const Weight* bias, Buffer& out) {
  BS_RETURN_IF_ERROR(CheckSize(x, static_cast<size_t>(rows) * w.cols, "MatMul input"));
  BS_RETURN_IF_ERROR(CheckSize(out, static_cast<size_t>(rows) * w.rows, "MatMul output"));
  if (bias != nullptr) BS_RETURN_IF_ERROR(CheckF32Vector(*bias, w.rows, "MatMul bias"));
  if (rows == 0) return absl::OkStatus();
  const float* b = bias != nullptr ? static_cast<const float*>(bias->data) : nullptr;
  if (batch_invariant_ || rows <= kMatVecMaxRows) {
    BS_CUDA_RETURN_IF_ERROR(cuda::MatVec(x.data, rows, w.data, w.dtype, w.rows, w.cols, b, out.data, stream_),
                            "MatMul (matvec)");
    return absl::OkStatus();
  }
  BS_RETURN_IF_ERROR(Gemm(x, rows, w, out));
  if (b != nullptr) BS_CUDA_RETURN_IF_ERROR(cuda::AddBias(out.data, b, rows, w.rows, stream_), "MatMul (bias)");
  return absl::OkStatus();
}

absl::Status CudaDevice::Rope(Buffer& x, int rows, int heads, int head_dim, std::span<const int32_t> positions,
                              const Weight& inv_freq) {
  BS_RETURN_IF_ERROR(CheckSize(x, static_cast<size_t>(rows) * heads * head_dim, "Rope"));
  BS_RETURN_IF_ERROR(CheckF32Vector(inv_freq, head_dim / 2, "Rope inv_freq"));
  if (positions.size() < static_cast<size_t>(rows)) {
    return absl::InvalidArgumentError(absl::StrCat("Rope: ", positions.size(), " positions for ", rows, " rows"));
  }
  BS_ASSIGN_OR_RETURN(const int32_t* d_pos, staging_->PutOnly(positions));
  BS_CUDA_RETURN_IF_ERROR(
      cuda::Rope(x.data, rows, heads, head_dim, d_pos, static_cast<const float*>(inv_freq.data), stream_), "Rope");
  return absl::OkStatus();
}

absl::Status CudaDevice::WriteKv(KvCache& cache, int layer, const Buffer& k, const Buffer& v,
                                 std::span<const int32_t> slots) {
  const auto& s = cache.spec;
  const size_t kv_dim = static_cast<size_t>(s.num_kv_heads) * s.head_dim;
  const size_t slots_total = static_cast<size_t>(s.num_blocks) * s.block_size;
  if (layer < 0 || layer >= s.num_layers) {
    return absl::OutOfRangeError(absl::StrCat("WriteKv: layer ", layer, " of ", s.num_layers));
  }
  for (int32_t slot : slots) {
    if (slot < 0 || static_cast<size_t>(slot) >= slots_total) {
      return absl::OutOfRangeError(absl::StrCat("KV slot ", slot, " outside the cache of ", slots_total));
    }
  }
  BS_RETURN_IF_ERROR(CheckSize(k, slots.size() * kv_dim, "WriteKv k"));
  BS_RETURN_IF_ERROR(CheckSize(v, slots.size() * kv_dim, "WriteKv v"));
  BS_ASSIGN_OR_RETURN(const int32_t* d_slots, staging_->PutOnly(slots));
  BS_CUDA_RETURN_IF_ERROR(cuda::WriteKv(cache.LayerSlots(layer, 0), cache.LayerSlots(layer, 1), k.data, v.data, d_slots,
                                        static_cast<int>(slots.size()), static_cast<int64_t>(kv_dim), stream_),
                          "WriteKv");
  return absl::OkStatus();
}

absl::Status CudaDevice::Attention(const Buffer& q, const KvCache& cache, int layer,
                                   std::span<const AttentionSeq> seqs, const AttentionParams& p, Buffer& out) {
  const auto& s = cache.spec;
  if (p.num_kv_heads <= 0 || p.num_heads % p.num_kv_heads != 0 ||
      !cuda::AttentionSupported(p.head_dim, p.num_heads / p.num_kv_heads)) {
    return absl::UnimplementedError(absl::StrCat("CUDA attention supports head_dim <= 256 (even) and up to 8 query ",
                                                 "heads per KV head; got head_dim ", p.head_dim, ", ", p.num_heads,
                                                 " heads, ", p.num_kv_heads, " KV heads"));
  }
  if (layer < 0 || layer >= s.num_layers) {
    return absl::OutOfRangeError(absl::StrCat("Attention: layer ", layer, " of ", s.num_layers));
  }
  attn_rows_.clear();
  attn_tables_.clear();
  std::vector<std::pair<const AttentionSeq*, int32_t>> prefill;  // sequence, its table offset
  for (const auto& sq : seqs) {
    BS_RETURN_IF_ERROR(CheckAttentionSeq(q, out, s, sq, p));
    const int32_t table_offset = static_cast<int32_t>(attn_tables_.size());
    const int32_t used_blocks = (sq.context_len + s.block_size - 1) / s.block_size;
    attn_tables_.insert(attn_tables_.end(), sq.block_table.begin(), sq.block_table.begin() + used_blocks);
    if (!batch_invariant_ && sq.q_len >= kPrefillKernelMinRows) {
      prefill.emplace_back(&sq, table_offset);
      continue;
    }
    for (int32_t i = 0; i < sq.q_len; ++i) {
      attn_rows_.push_back({sq.q_begin + i, sq.context_len - sq.q_len + i + 1, table_offset});
    }
  }
  BS_RETURN_IF_ERROR(staging_->Begin(CudaStaging::PaddedSize(attn_tables_) + CudaStaging::PaddedSize(attn_rows_)));
  BS_ASSIGN_OR_RETURN(const int32_t* d_tables, staging_->Put(std::span<const int32_t>(attn_tables_)));
  BS_ASSIGN_OR_RETURN(const cuda::AttentionRow* d_rows, staging_->Put(std::span<const cuda::AttentionRow>(attn_rows_)));
  cuda::AttentionArgs a{q.data,      cache.LayerSlots(layer, 0), cache.LayerSlots(layer, 1), d_tables,
                        s.block_size, p.num_heads, p.num_kv_heads, p.head_dim, p.scale, out.data};
  BS_CUDA_RETURN_IF_ERROR(cuda::AttentionRows(a, d_rows, static_cast<int>(attn_rows_.size()), stream_),
                          "Attention (rows)");
  for (const auto& [sq, table_offset] : prefill) {
    BS_CUDA_RETURN_IF_ERROR(
        cuda::AttentionPrefill(a, sq->q_begin, sq->q_len, sq->context_len, d_tables + table_offset, stream_),
        "Attention (prefill)");
  }
  return absl::OkStatus();
}

absl::Status CudaDevice::SwiGlu(const Buffer& gate, const Buffer& up, size_t n, Buffer& out) {
  BS_RETURN_IF_ERROR(CheckSize(gate, n, "SwiGlu gate"));
  BS_RETURN_IF_ERROR(CheckSize(up, n, "SwiGlu up"));
  BS_RETURN_IF_ERROR(CheckSize(out, n, "SwiGlu"));
  BS_CUDA_RETURN_IF_ERROR(cuda::SwiGlu(gate.data, up.data, n, out.data, stream_), "SwiGlu");
  return absl::OkStatus();
}

absl::Status CudaDevice::Add(Buffer& x, const Buffer& y, size_t n) {
  BS_RETURN_IF_ERROR(CheckSize(x, n, "Add"));
  BS_RETURN_IF_ERROR(CheckSize(y, n, "Add"));
  BS_CUDA_RETURN_IF_ERROR(cuda::Add(x.data, y.data, n, stream_), "Add");
  return absl::OkStatus();
}

absl::Status CudaDevice::Copy(const Buffer& src, size_t src_offset, Buffer& dst, size_t dst_offset, size_t n) {
  BS_RETURN_IF_ERROR(CheckSize(src, src_offset + n, "Copy source"));
  BS_RETURN_IF_ERROR(CheckSize(dst, dst_offset + n, "Copy"));
  const float* from = src.data + src_offset;
  float* to = dst.data + dst_offset;
  const size_t bytes = n * sizeof(float);
  if (from < to + n && to < from + n && from != to) {
    // Overlapping ranges (memmove semantics, as on the CPU) go through a temporary.
    BS_ASSIGN_OR_RETURN(void* tmp, copy_tmp_->Get(bytes));
    BS_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(tmp, from, bytes, cudaMemcpyDeviceToDevice, stream_), "Copy");
    from = static_cast<const float*>(tmp);
  }
  BS_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(to, from, bytes, cudaMemcpyDeviceToDevice, stream_), "Copy");
  return absl::OkStatus();
}

}  // namespace brickserve
