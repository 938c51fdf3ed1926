// Host metadata of an op (token ids, KV slots, block tables, LoRA and sparse-FFN tables) staged to
// the GPU, and device scratch that grows on demand.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <span>
#include <vector>

#include "absl/status/statusor.h"

namespace brickserve {

// A pinned host area mirrored by a device area of the same size, filled front to back between two
// stream synchronisations. A pinned region is never rewritten before the stream has caught up, so
// uploads stay asynchronous; the device region may be, since the stream orders its readers first.
class CudaStaging {
 public:
  explicit CudaStaging(cudaStream_t stream) : stream_(stream) {}
  ~CudaStaging();
  CudaStaging(const CudaStaging&) = delete;
  CudaStaging& operator=(const CudaStaging&) = delete;

  // Makes room for `bytes` (the sum of an op's Put sizes): every Put of the op then lands without
  // a reset in between, which would let a later Put overwrite an earlier one before its kernel ran.
  absl::Status Begin(size_t bytes);
  // Copies `bytes` into the pinned area and enqueues its upload; returns the device address. The
  // same bytes staged earlier since the last Reset are not uploaded again (every layer of a
  // forward pass stages the same positions, KV slots and block tables).
  absl::StatusOr<void*> Put(const void* host, size_t bytes);
  template <typename T>
  absl::StatusOr<const T*> Put(std::span<const T> v) {
    absl::StatusOr<void*> p = Put(v.data(), v.size_bytes());
    if (!p.ok()) return p.status();
    return static_cast<const T*>(*p);
  }
  // Begin and Put for an op that stages one array.
  template <typename T>
  absl::StatusOr<const T*> PutOnly(std::span<const T> v) {
    if (absl::Status st = Begin(Padded(std::max<size_t>(v.size_bytes(), 1))); !st.ok()) return st;
    return Put(v);
  }
  // After the stream was synchronised: the whole area is free again.
  void Reset() {
    used_ = 0;
    staged_.clear();
  }

  static constexpr size_t kAlign = 256;
  static size_t Padded(size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }
  // The room a Put of `v` takes (what to add up for Begin).
  template <typename T>
  static size_t PaddedSize(const std::vector<T>& v) {
    return Padded(std::max<size_t>(v.size() * sizeof(T), 1));
  }

 private:
  absl::Status Grow(size_t capacity);

  cudaStream_t stream_;
  char* host_ = nullptr;
  char* dev_ = nullptr;
  size_t capacity_ = 0;
  size_t used_ = 0;
  struct Staged {
    size_t offset;
    size_t bytes;
  };
  std::vector<Staged> staged_;  // this epoch's uploads, most recent last
};

// Device memory reused by one kind of op (cuBLAS input conversion, LoRA products, FFN activations).
class CudaScratch {
 public:
  explicit CudaScratch(cudaStream_t stream) : stream_(stream) {}
  ~CudaScratch();
  CudaScratch(const CudaScratch&) = delete;
  CudaScratch& operator=(const CudaScratch&) = delete;
  // At least `bytes`; growing waits for the stream, since queued kernels may still use the old area.
  absl::StatusOr<void*> Get(size_t bytes);

 private:
  cudaStream_t stream_;
  void* data_ = nullptr;
  size_t capacity_ = 0;
};

}  // namespace brickserve
