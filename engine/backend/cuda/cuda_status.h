// CUDA and cuBLAS results as absl::Status: every call of the CUDA backend is checked through these.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace brickserve {

inline absl::Status CudaStatus(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return absl::OkStatus();
  const std::string msg =
      absl::StrCat("CUDA error in ", what, ": ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")");
  if (e == cudaErrorMemoryAllocation) return absl::ResourceExhaustedError(msg);
  if (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver) return absl::FailedPreconditionError(msg);
  return absl::InternalError(msg);
}

inline absl::Status CublasStatus(cublasStatus_t e, const char* what) {
  if (e == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  const std::string msg = absl::StrCat("cuBLAS error in ", what, ": ", cublasGetStatusName(e), " (",
                                       cublasGetStatusString(e), ")");
  if (e == CUBLAS_STATUS_ALLOC_FAILED) return absl::ResourceExhaustedError(msg);
  return absl::InternalError(msg);
}

}  // namespace brickserve

#define BS_CUDA_RETURN_IF_ERROR(expr, what)                                   \
  do {                                                                        \
    if (absl::Status _bs_cuda_st = ::brickserve::CudaStatus((expr), (what)); \
        !_bs_cuda_st.ok())                                                    \
      return _bs_cuda_st;                                                     \
  } while (0)

#define BS_CUBLAS_RETURN_IF_ERROR(expr, what)                                   \
  do {                                                                          \
    if (absl::Status _bs_cublas_st = ::brickserve::CublasStatus((expr), (what)); \
        !_bs_cublas_st.ok())                                                    \
      return _bs_cublas_st;                                                     \
  } while (0)
