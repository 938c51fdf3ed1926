// Loads what tests/reference/make_lora_golden.py writes (run as the ctest fixture lora_golden):
// a base model, PEFT adapters, and float64 logits of the merged models.
#pragma once

#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace brickserve::testing {

struct LoraUseSpec {
  std::string name;
  float weight = 1.0f;
};

struct LoraCase {
  std::string name, base, dtype;
  std::vector<LoraUseSpec> adapters;
  std::vector<int32_t> prompt_ids;
  std::vector<std::vector<float>> prompt_logits;
  double max_abs_logit_diff_vs_base = 0;
};

struct BadAdapter {
  std::string name, base, expect, mentions;
};

struct LoraGolden {
  std::string dir;
  std::vector<LoraCase> cases;
  std::vector<BadAdapter> bad;
  std::string base_dir(const std::string& base) const { return dir + "/" + base; }
  std::string adapter_dir(const std::string& name) const { return dir + "/adapters/" + name; }
};

inline std::string LoraGoldenDir() { return std::string(BRICKSERVE_TEST_DATA_DIR) + "/lora_golden"; }

// Empty `cases` when the fixture has not run.
inline LoraGolden LoadLoraGolden() {
  LoraGolden g;
  g.dir = LoraGoldenDir();
  std::ifstream in(g.dir + "/lora_reference.json");
  if (!in) return g;
  auto j = nlohmann::json::parse(in);
  for (const auto& c : j["cases"]) {
    LoraCase lc;
    lc.name = c["name"];
    lc.base = c["base"];
    lc.dtype = c.value("dtype", "F32");
    for (const auto& a : c["adapters"]) lc.adapters.push_back({a["name"], a["weight"].get<float>()});
    lc.prompt_ids = c["prompt_ids"].get<std::vector<int32_t>>();
    lc.prompt_logits = c["prompt_logits"].get<std::vector<std::vector<float>>>();
    lc.max_abs_logit_diff_vs_base = c["max_abs_logit_diff_vs_base"];
    g.cases.push_back(std::move(lc));
  }
  for (const auto& b : j["bad"]) g.bad.push_back({b["name"], b["base"], b["expect"], b["mentions"]});
  return g;
}

#define BS_SKIP_WITHOUT_LORA_GOLDEN(g)                                                                 \
  if ((g).cases.empty())                                                                              \
  GTEST_SKIP() << "no LoRA reference in " << ::brickserve::testing::LoraGoldenDir()                   \
               << ": run tests/reference/make_lora_golden.py (the ctest fixture lora_golden_setup does) " \
                  "with /usr/bin/python3 and python3-torch"

}  // namespace brickserve::testing
