// Fresh random inputs for the module-builder tests: a new seed every run (printed by the tests),
// replayed with BRICKSERVE_TEST_SEED=<seed>.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <random>
#include <vector>

namespace brickserve::test_inputs {

inline uint64_t FreshSeed() {
  if (const char* env = std::getenv("BRICKSERVE_TEST_SEED")) return std::strtoull(env, nullptr, 10);
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) ^ rd();
}

inline std::vector<float> Gaussian(std::mt19937_64& rng, size_t count, float mean = 0.0f, float stddev = 1.0f) {
  std::normal_distribution<float> nd(mean, stddev);
  std::vector<float> v(count);
  for (float& x : v) x = nd(rng);
  return v;
}

}  // namespace brickserve::test_inputs
