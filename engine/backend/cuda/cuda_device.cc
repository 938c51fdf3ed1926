#include "engine/backend/cuda/cuda_device.h"

#include <cuda_fp16.h>

#include <algorithm>
#include <cstring>
#include <unordered_map>

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

template <typename T>
size_t Padded(const std::vector<T>& v) {
  return CudaStaging::Padded(std::max<size_t>(v.size() * sizeof(T), 1));
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
  BS_RETURN_IF_ERROR(staging_->Begin(CudaStaging::Padded(std::max<size_t>(ids.size_bytes(), 1))));
  BS_ASSIGN_OR_RETURN(const int32_t* d_ids, staging_->Put(ids));
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
  BS_RETURN_IF_ERROR(staging_->Begin(CudaStaging::Padded(std::max<size_t>(positions.size_bytes(), 1))));
  BS_ASSIGN_OR_RETURN(const int32_t* d_pos, staging_->Put(positions));
  BS_CUDA_RETURN_IF_ERROR(
      cuda::Rope(x.data, rows, heads, head_dim, d_pos, static_cast<const float*>(inv_freq.data), stream_), "Rope");
  return absl::OkStatus();
}

float* CudaDevice::KvBase(const KvCache& cache, int layer, int which) {
  const auto& s = cache.spec;
  const size_t kv_dim = static_cast<size_t>(s.num_kv_heads) * s.head_dim;
  const size_t slots_total = static_cast<size_t>(s.num_blocks) * s.block_size;
  return cache.storage.data + (static_cast<size_t>(layer) * 2 + which) * slots_total * kv_dim;
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
  BS_RETURN_IF_ERROR(staging_->Begin(CudaStaging::Padded(std::max<size_t>(slots.size_bytes(), 1))));
  BS_ASSIGN_OR_RETURN(const int32_t* d_slots, staging_->Put(slots));
  BS_CUDA_RETURN_IF_ERROR(cuda::WriteKv(KvBase(cache, layer, 0), KvBase(cache, layer, 1), k.data, v.data, d_slots,
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
  const size_t q_dim = static_cast<size_t>(p.num_heads) * p.head_dim;
  attn_rows_.clear();
  attn_tables_.clear();
  std::vector<std::pair<const AttentionSeq*, int32_t>> prefill;  // sequence, its table offset
  for (const auto& sq : seqs) {
    if (sq.context_len > static_cast<int64_t>(sq.block_table.size()) * s.block_size || sq.q_len > sq.context_len) {
      return absl::InvalidArgumentError("Attention: context longer than the sequence's block table");
    }
    BS_RETURN_IF_ERROR(CheckSize(q, (static_cast<size_t>(sq.q_begin) + sq.q_len) * q_dim, "Attention q"));
    BS_RETURN_IF_ERROR(CheckSize(out, (static_cast<size_t>(sq.q_begin) + sq.q_len) * q_dim, "Attention out"));
    const int32_t table_offset = static_cast<int32_t>(attn_tables_.size());
    const int32_t used_blocks = (sq.context_len + s.block_size - 1) / s.block_size;
    for (int32_t b = 0; b < used_blocks; ++b) {
      if (sq.block_table[b] < 0 || sq.block_table[b] >= s.num_blocks) {
        return absl::OutOfRangeError(absl::StrCat("Attention: block ", sq.block_table[b], " outside the cache of ",
                                                  s.num_blocks, " blocks"));
      }
      attn_tables_.push_back(sq.block_table[b]);
    }
    if (!batch_invariant_ && sq.q_len >= kPrefillKernelMinRows) {
      prefill.emplace_back(&sq, table_offset);
      continue;
    }
    for (int32_t i = 0; i < sq.q_len; ++i) {
      attn_rows_.push_back({sq.q_begin + i, sq.context_len - sq.q_len + i + 1, table_offset});
    }
  }
  BS_RETURN_IF_ERROR(staging_->Begin(Padded(attn_tables_) + Padded(attn_rows_)));
  BS_ASSIGN_OR_RETURN(const int32_t* d_tables, staging_->Put(std::span<const int32_t>(attn_tables_)));
  BS_ASSIGN_OR_RETURN(const cuda::AttentionRow* d_rows, staging_->Put(std::span<const cuda::AttentionRow>(attn_rows_)));
  cuda::AttentionArgs a{q.data,        KvBase(cache, layer, 0), KvBase(cache, layer, 1), d_tables, s.block_size,
                        p.num_heads,   p.num_kv_heads,          p.head_dim,              p.scale,  out.data};
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

absl::Status CudaDevice::AddLora(const Buffer& x, std::span<const LoraSegment> segments, Buffer& y) {
  lora_segs_.clear();
  lora_rows_.clear();
  lora_row_weights_.clear();
  std::unordered_map<int32_t, std::vector<cuda::LoraEntry>> by_row;
  lora_out_rows_.clear();  // output rows in order of first appearance
  int64_t in = -1, out = -1;
  int32_t t_floats = 0;
  int max_items = 0;
  for (const LoraSegment& seg : segments) {
    const Weight& a = *seg.a;
    const Weight& b = *seg.b;
    const int64_t rank = a.rows;
    if (b.rows != rank) {
      return absl::InvalidArgumentError(absl::StrCat("AddLora: b is [", b.rows, ", ", b.cols, "] for rank ", rank));
    }
    if ((in >= 0 && a.cols != in) || (out >= 0 && b.cols != out)) {
      return absl::InvalidArgumentError("AddLora: the segments of one call differ in input or output width");
    }
    if (seg.row_weights.size() != seg.rows.size()) {
      return absl::InvalidArgumentError("AddLora: a segment has a row weight per row");
    }
    in = a.cols;
    out = b.cols;
    const int32_t count = static_cast<int32_t>(seg.rows.size());
    if (count == 0) continue;
    const int32_t segment = static_cast<int32_t>(lora_segs_.size());
    lora_segs_.push_back({a.data, b.data, a.dtype, b.dtype, static_cast<int32_t>(rank),
                          static_cast<int32_t>(lora_rows_.size()), count, t_floats, seg.scale});
    for (int32_t i = 0; i < count; ++i) {
      const int32_t r = seg.rows[i];
      BS_RETURN_IF_ERROR(CheckSize(x, (static_cast<size_t>(r) + 1) * in, "AddLora input"));
      BS_RETURN_IF_ERROR(CheckSize(y, (static_cast<size_t>(r) + 1) * out, "AddLora output"));
      lora_rows_.push_back(r);
      lora_row_weights_.push_back(seg.row_weights[i]);
      auto [it, fresh] = by_row.try_emplace(r);
      if (fresh) lora_out_rows_.push_back(r);
      it->second.push_back({segment, t_floats + i * static_cast<int32_t>(rank)});
    }
    t_floats += count * static_cast<int32_t>(rank);
    max_items = std::max(max_items, count * static_cast<int>(rank));
  }
  if (lora_segs_.empty()) return absl::OkStatus();
  lora_entry_begin_.assign(1, 0);
  lora_entries_.clear();
  for (int32_t r : lora_out_rows_) {
    const auto& e = by_row[r];
    lora_entries_.insert(lora_entries_.end(), e.begin(), e.end());
    lora_entry_begin_.push_back(static_cast<int32_t>(lora_entries_.size()));
  }
  BS_ASSIGN_OR_RETURN(void* t, lora_t_->Get(static_cast<size_t>(t_floats) * sizeof(float)));
  BS_RETURN_IF_ERROR(staging_->Begin(Padded(lora_segs_) + Padded(lora_rows_) + Padded(lora_row_weights_) +
                                     Padded(lora_out_rows_) + Padded(lora_entry_begin_) + Padded(lora_entries_)));
  BS_ASSIGN_OR_RETURN(auto* d_segs, staging_->Put(std::span<const cuda::LoraSegmentArgs>(lora_segs_)));
  BS_ASSIGN_OR_RETURN(auto* d_rows, staging_->Put(std::span<const int32_t>(lora_rows_)));
  BS_ASSIGN_OR_RETURN(auto* d_weights, staging_->Put(std::span<const float>(lora_row_weights_)));
  BS_ASSIGN_OR_RETURN(auto* d_out_rows, staging_->Put(std::span<const int32_t>(lora_out_rows_)));
  BS_ASSIGN_OR_RETURN(auto* d_begin, staging_->Put(std::span<const int32_t>(lora_entry_begin_)));
  BS_ASSIGN_OR_RETURN(auto* d_entries, staging_->Put(std::span<const cuda::LoraEntry>(lora_entries_)));
  float* d_t = static_cast<float*>(t);
  BS_CUDA_RETURN_IF_ERROR(cuda::LoraShrink(x.data, in, d_segs, static_cast<int>(lora_segs_.size()), max_items, d_rows,
                                           d_weights, d_t, stream_),
                          "AddLora (shrink)");
  BS_CUDA_RETURN_IF_ERROR(cuda::LoraExpand(d_t, d_segs, d_out_rows, static_cast<int>(lora_out_rows_.size()), d_begin,
                                           d_entries, out, y.data, stream_),
                          "AddLora (expand)");
  return absl::OkStatus();
}

absl::Status CudaDevice::SparseFfn(const Buffer& x, const Weight& gate, const Weight& up, const Weight& down_t,
                                   std::span<const FfnNeuronGroup> groups, std::span<const int32_t> out_rows,
                                   Buffer& out) {
  const int64_t hidden = gate.cols;
  if (up.rows != gate.rows || up.cols != hidden || down_t.rows != gate.rows || down_t.cols != hidden ||
      up.dtype != gate.dtype || down_t.dtype != gate.dtype) {
    return absl::InvalidArgumentError("SparseFfn: gate, up and down_t must all be [d_ff, hidden] of one dtype");
  }
  ffn_groups_.clear();
  ffn_neurons_.clear();
  ffn_rows_.clear();
  std::unordered_map<int32_t, std::vector<cuda::FfnEntry>> by_row;
  int64_t act_floats = 0;
  int max_items = 0;
  for (const FfnNeuronGroup& g : groups) {
    const int32_t group = static_cast<int32_t>(ffn_groups_.size());
    for (int32_t n : g.neurons) {
      if (n < 0 || n >= gate.rows) {
        return absl::OutOfRangeError(absl::StrCat("SparseFfn: neuron ", n, " outside d_ff ", gate.rows));
      }
    }
    for (int32_t i = 0; i < static_cast<int32_t>(g.rows.size()); ++i) {
      BS_RETURN_IF_ERROR(CheckSize(x, (static_cast<size_t>(g.rows[i]) + 1) * hidden, "SparseFfn input"));
      by_row[g.rows[i]].push_back({group, i});
    }
    ffn_groups_.push_back({static_cast<int32_t>(ffn_neurons_.size()), static_cast<int32_t>(g.neurons.size()),
                           static_cast<int32_t>(ffn_rows_.size()), static_cast<int32_t>(g.rows.size()), act_floats});
    ffn_neurons_.insert(ffn_neurons_.end(), g.neurons.begin(), g.neurons.end());
    ffn_rows_.insert(ffn_rows_.end(), g.rows.begin(), g.rows.end());
    const int64_t items = static_cast<int64_t>(g.rows.size()) * static_cast<int64_t>(g.neurons.size());
    act_floats += items;
    max_items = std::max<int64_t>(max_items, items);
  }
  ffn_entry_begin_.assign(1, 0);
  ffn_entries_.clear();
  for (int32_t r : out_rows) {
    BS_RETURN_IF_ERROR(CheckSize(out, (static_cast<size_t>(r) + 1) * hidden, "SparseFfn output"));
    if (auto it = by_row.find(r); it != by_row.end()) {
      ffn_entries_.insert(ffn_entries_.end(), it->second.begin(), it->second.end());
    }
    ffn_entry_begin_.push_back(static_cast<int32_t>(ffn_entries_.size()));
  }
  if (out_rows.empty()) return absl::OkStatus();
  BS_ASSIGN_OR_RETURN(void* act, ffn_act_->Get(std::max<int64_t>(act_floats, 1) * sizeof(float)));
  BS_RETURN_IF_ERROR(staging_->Begin(Padded(ffn_groups_) + Padded(ffn_neurons_) + Padded(ffn_rows_) +
                                     CudaStaging::Padded(std::max<size_t>(out_rows.size_bytes(), 1)) +
                                     Padded(ffn_entry_begin_) + Padded(ffn_entries_)));
  BS_ASSIGN_OR_RETURN(auto* d_groups, staging_->Put(std::span<const cuda::FfnGroupArgs>(ffn_groups_)));
  BS_ASSIGN_OR_RETURN(auto* d_neurons, staging_->Put(std::span<const int32_t>(ffn_neurons_)));
  BS_ASSIGN_OR_RETURN(auto* d_rows, staging_->Put(std::span<const int32_t>(ffn_rows_)));
  BS_ASSIGN_OR_RETURN(auto* d_out_rows, staging_->Put(out_rows));
  BS_ASSIGN_OR_RETURN(auto* d_begin, staging_->Put(std::span<const int32_t>(ffn_entry_begin_)));
  BS_ASSIGN_OR_RETURN(auto* d_entries, staging_->Put(std::span<const cuda::FfnEntry>(ffn_entries_)));
  float* d_act = static_cast<float*>(act);
  BS_CUDA_RETURN_IF_ERROR(cuda::SparseFfnActivations(x.data, hidden, gate.data, up.data, gate.dtype, d_groups,
                                                     static_cast<int>(ffn_groups_.size()), max_items, d_neurons,
                                                     d_rows, d_act, stream_),
                          "SparseFfn (activations)");
  BS_CUDA_RETURN_IF_ERROR(cuda::SparseFfnDown(d_act, down_t.data, down_t.dtype, hidden, d_groups, d_neurons,
                                              d_out_rows, static_cast<int>(out_rows.size()), d_begin, d_entries,
                                              out.data, stream_),
                          "SparseFfn (down)");
  return absl::OkStatus();
}

absl::Status CudaDevice::SampleTokens(Buffer& logits, int vocab, std::span<const SampleRow> rows,
                                      std::span<int32_t> ids) {
  const int n = static_cast<int>(rows.size());
  BS_RETURN_IF_ERROR(CheckSize(logits, static_cast<size_t>(n) * vocab, "SampleTokens logits"));
  if (ids.size() < rows.size()) return absl::InvalidArgumentError("SampleTokens: fewer ids than rows");
  if (n == 0) return absl::OkStatus();
  sample_rows_.clear();
  sample_penalties_.clear();
  for (const SampleRow& r : rows) {
    sample_rows_.push_back({r.temperature, r.top_k, r.top_p, r.min_p, r.repetition_penalty, r.presence_penalty,
                            r.frequency_penalty, r.uniform, static_cast<int32_t>(sample_penalties_.size()),
                            static_cast<int32_t>(r.penalties.size())});
    for (const PenaltyToken& t : r.penalties) {
      if (t.id < 0 || t.id >= vocab) {
        return absl::OutOfRangeError(absl::StrCat("SampleTokens: penalty token ", t.id, " outside the vocabulary of ",
                                                  vocab));
      }
      sample_penalties_.push_back({t.id, t.output_count, t.seen});
    }
  }
  BS_ASSIGN_OR_RETURN(void* probs, sample_probs_->Get(static_cast<size_t>(n) * vocab * sizeof(double)));
  BS_ASSIGN_OR_RETURN(void* d_ids, sample_ids_->Get(static_cast<size_t>(n) * sizeof(int32_t)));
  BS_RETURN_IF_ERROR(staging_->Begin(Padded(sample_rows_) + Padded(sample_penalties_)));
  BS_ASSIGN_OR_RETURN(auto* d_rows, staging_->Put(std::span<const cuda::SampleRowArgs>(sample_rows_)));
  BS_ASSIGN_OR_RETURN(auto* d_pen, staging_->Put(std::span<const cuda::PenaltyArgs>(sample_penalties_)));
  BS_CUDA_RETURN_IF_ERROR(cuda::SampleTokens(logits.data, vocab, d_rows, n, d_pen, static_cast<double*>(probs),
                                             static_cast<int32_t*>(d_ids), stream_),
                          "SampleTokens");
  BS_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(ids.data(), d_ids, static_cast<size_t>(n) * sizeof(int32_t),
                                          cudaMemcpyDeviceToHost, stream_),
                          "SampleTokens (ids)");
  return Synchronize();
}

}  // namespace brickserve
