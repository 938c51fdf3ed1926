#include "engine/backend/cuda/cuda_staging.h"

#include <algorithm>
#include <cstring>

#include "engine/backend/cuda/cuda_status.h"

namespace brickserve {

namespace {
constexpr size_t kInitialStagingBytes = size_t{4} << 20;
}

CudaStaging::~CudaStaging() {
  if (host_ != nullptr) cudaFreeHost(host_);
  if (dev_ != nullptr) cudaFree(dev_);
}

absl::Status CudaStaging::Grow(size_t capacity) {
  BS_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_), "staging: waiting for the stream");
  if (host_ != nullptr) BS_CUDA_RETURN_IF_ERROR(cudaFreeHost(host_), "staging: cudaFreeHost");
  if (dev_ != nullptr) BS_CUDA_RETURN_IF_ERROR(cudaFree(dev_), "staging: cudaFree");
  host_ = dev_ = nullptr;
  capacity_ = used_ = 0;
  staged_.clear();
  BS_CUDA_RETURN_IF_ERROR(cudaMallocHost(reinterpret_cast<void**>(&host_), capacity), "staging: cudaMallocHost");
  BS_CUDA_RETURN_IF_ERROR(cudaMalloc(reinterpret_cast<void**>(&dev_), capacity), "staging: cudaMalloc");
  capacity_ = capacity;
  return absl::OkStatus();
}

absl::Status CudaStaging::Begin(size_t bytes) {
  if (used_ + bytes <= capacity_) return absl::OkStatus();
  // Full before the next Synchronize: wait for the queued uploads and their readers, and double
  // the area, so a forward pass that needs this much fits without waiting next time.
  return Grow(std::max({bytes, 2 * capacity_, kInitialStagingBytes}));
}

absl::StatusOr<void*> CudaStaging::Put(const void* host, size_t bytes) {
  // A few recent uploads are worth comparing with: a forward pass repeats its metadata per layer.
  constexpr size_t kLookBack = 16;
  for (size_t i = staged_.size(); i > 0 && staged_.size() - i < kLookBack; --i) {
    const Staged& s = staged_[i - 1];
    if (s.bytes == bytes && bytes > 0 && std::memcmp(host_ + s.offset, host, bytes) == 0) return dev_ + s.offset;
  }
  const size_t padded = Padded(std::max<size_t>(bytes, 1));
  if (used_ + padded > capacity_) {
    return absl::InternalError("CUDA staging: Put beyond the room reserved by Begin");
  }
  char* h = host_ + used_;
  char* d = dev_ + used_;
  used_ += padded;
  if (bytes == 0) return d;
  std::memcpy(h, host, bytes);
  staged_.push_back({static_cast<size_t>(h - host_), bytes});
  BS_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(d, h, bytes, cudaMemcpyHostToDevice, stream_), "staging: upload");
  return d;
}

CudaScratch::~CudaScratch() {
  if (data_ != nullptr) cudaFree(data_);
}

absl::StatusOr<void*> CudaScratch::Get(size_t bytes) {
  if (bytes <= capacity_) return data_;
  BS_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_), "scratch: waiting for the stream");
  if (data_ != nullptr) BS_CUDA_RETURN_IF_ERROR(cudaFree(data_), "scratch: cudaFree");
  data_ = nullptr;
  capacity_ = 0;
  const size_t want = std::max(bytes + bytes / 2, size_t{1} << 20);
  BS_CUDA_RETURN_IF_ERROR(cudaMalloc(&data_, want), "scratch: cudaMalloc");
  capacity_ = want;
  return data_;
}

}  // namespace brickserve
