// 16-bit floats for tests that build BF16/F16 weights on the host.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace brickserve::testing {

inline uint16_t ToBF16(float f) {  // round to nearest even (finite inputs)
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return static_cast<uint16_t>((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}
inline float FromBF16(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// Round to nearest, for values in F16's normal range (smaller ones flush to zero); a mantissa that
// rounds up carries into the exponent.
inline uint16_t ToF16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t sign = (u >> 16) & 0x8000;
  const int exp = static_cast<int>((u >> 23) & 0xff) - 127 + 15;
  const uint32_t mant = u & 0x7fffff;
  if (exp <= 0) return static_cast<uint16_t>(sign);
  return static_cast<uint16_t>(sign | ((static_cast<uint32_t>(exp) << 10) + ((mant + 0x1000) >> 13)));
}
inline float FromF16(uint16_t h) {
  const int exp = (h >> 10) & 0x1f;
  const float mag = exp == 0 ? std::ldexp(static_cast<float>(h & 0x3ff), -24)
                             : std::ldexp(static_cast<float>((h & 0x3ff) | 0x400), exp - 25);
  return (h & 0x8000) ? -mag : mag;
}

}  // namespace brickserve::testing
