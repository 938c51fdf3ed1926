// Four-float SIMD values (GCC/Clang vector extension: SSE2 or NEON) for the module builder's
// k-means and router fitting. Written out rather than left to the auto-vectoriser: plain 8-lane
// loops vectorise well at -O2, but at -O3 GCC vectorises the outer loop instead, with lane
// transposes that made the similarity step 3x slower; and a plain float reduction is not vectorised
// without -ffast-math. Two of these give eight fixed lanes, so the summation order (and the result)
// does not depend on the compiler flags.
#pragma once

#include <cstdint>
#include <cstring>

namespace brickserve::simd4 {

typedef float F4 __attribute__((vector_size(16)));

inline F4 Load4(const float* p) {
  F4 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline float Sum8(F4 lo, F4 hi) {
  const F4 s = lo + hi;
  return (s[0] + s[1]) + (s[2] + s[3]);
}

inline float Dot(const float* a, const float* b, int64_t n) {
  F4 lo = {}, hi = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    lo += Load4(a + i) * Load4(b + i);
    hi += Load4(a + i + 4) * Load4(b + i + 4);
  }
  float s = Sum8(lo, hi);
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

}  // namespace brickserve::simd4
