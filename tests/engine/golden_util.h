// Loads the golden cases written by tests/reference/make_golden.py (run as a ctest fixture).
#pragma once

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace brickserve::testing {

struct GoldenCase {
  std::string name, dir, dtype;
  std::vector<int32_t> prompt_ids, greedy_ids;
  std::vector<std::vector<float>> step_logits;    // [steps][vocab]: last position after each step's input
  std::vector<std::vector<float>> prompt_logits;  // [prompt_len][vocab]
};

inline std::string GoldenDir() { return std::string(BRICKSERVE_TEST_DATA_DIR) + "/golden"; }

inline std::vector<std::string> GoldenCaseNames() {
  std::ifstream in(GoldenDir() + "/manifest.json");
  if (!in) return {};
  auto m = nlohmann::json::parse(in);
  return m["cases"].get<std::vector<std::string>>();
}

inline GoldenCase LoadGoldenCase(const std::string& name) {
  GoldenCase c;
  c.name = name;
  c.dir = GoldenDir() + "/" + name;
  std::ifstream in(c.dir + "/reference.json");
  auto j = nlohmann::json::parse(in);
  c.dtype = j["dtype"];
  c.prompt_ids = j["prompt_ids"].get<std::vector<int32_t>>();
  c.greedy_ids = j["greedy_ids"].get<std::vector<int32_t>>();
  c.step_logits = j["step_logits"].get<std::vector<std::vector<float>>>();
  c.prompt_logits = j["prompt_logits"].get<std::vector<std::vector<float>>>();
  return c;
}

// max |got - want| / max |want| over one row of logits.
inline double RelativeError(std::span<const float> got, std::span<const float> want) {
  double err = 0, scale = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    err = std::max(err, static_cast<double>(std::fabs(got[i] - want[i])));
    scale = std::max(scale, static_cast<double>(std::fabs(want[i])));
  }
  return err / scale;
}

// The bound for each storage type. The engine computes in F32 on the very weights the float64
// reference uses (BF16/F16 values widen exactly), so storage type changes only the rounding of
// F32 accumulation, not the inputs: the same 1e-4 holds for all three.
inline double Tolerance(const std::string& dtype) { return dtype == "F32" ? 1e-4 : 1e-4; }

#define BS_SKIP_WITHOUT_GOLDEN()                                                          \
  if (::brickserve::testing::GoldenCaseNames().empty())                                   \
  GTEST_SKIP() << "no golden cases in " << ::brickserve::testing::GoldenDir()             \
               << ": run tests/reference/make_golden.py (the ctest fixture golden_setup " \
                  "does) with /usr/bin/python3 and python3-torch"

}  // namespace brickserve::testing
