// Element types of weights and buffers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace brickserve {

enum class DType : uint8_t { kF32, kF16, kBF16, kI32 };

constexpr size_t DTypeSize(DType t) {
  switch (t) {
    case DType::kF32: return 4;
    case DType::kF16: return 2;
    case DType::kBF16: return 2;
    case DType::kI32: return 4;
  }
  return 0;
}

constexpr const char* DTypeName(DType t) {
  switch (t) {
    case DType::kF32: return "F32";
    case DType::kF16: return "F16";
    case DType::kBF16: return "BF16";
    case DType::kI32: return "I32";
  }
  return "?";
}

}  // namespace brickserve
