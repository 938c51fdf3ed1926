// Random host inputs for kernel and device tests: normal vectors, and weight matrices in any dtype
// together with the exact values a kernel must see (16-bit weights widened without rounding).
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "engine/backend/device.h"
#include "half_floats.h"

namespace brickserve::testing {

inline std::vector<float> RandomVector(size_t n, std::mt19937& rng, float stddev = 1.0f, float mean = 0.0f) {
  std::normal_distribution<float> d(mean, stddev);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// A rows x cols matrix of N(0, 1) values stored in `dtype`.
struct RandomMatrix {
  DType dtype;
  int64_t rows, cols;
  std::vector<uint16_t> half;
  std::vector<float> f32;
  std::vector<double> exact;  // the values the kernel must see, widened exactly

  RandomMatrix(DType t, int64_t r, int64_t c, std::mt19937& rng) : dtype(t), rows(r), cols(c) {
    std::normal_distribution<float> d(0.0f, 1.0f);
    for (int64_t i = 0; i < r * c; ++i) {
      const float v = d(rng);
      if (t == DType::kF32) {
        f32.push_back(v);
        exact.push_back(v);
      } else {
        half.push_back(t == DType::kBF16 ? ToBF16(v) : ToF16(v));
        exact.push_back(t == DType::kBF16 ? FromBF16(half.back()) : FromF16(half.back()));
      }
    }
  }
  const void* data() const { return dtype == DType::kF32 ? static_cast<const void*>(f32.data()) : half.data(); }
  HostTensor tensor() const { return {dtype, {rows, cols}, data(), nullptr}; }
};

}  // namespace brickserve::testing
