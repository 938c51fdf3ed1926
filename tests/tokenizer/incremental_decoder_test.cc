// Streaming detokenization: pieces are whole UTF-8 characters and add up to the full decode; the
// streamed clean-up equals the whole-text one.
#include <random>
#include <string>
#include <vector>

#include "engine/tokenizer/clean_up.h"
#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/unicode_util.h"
#include "gtest/gtest.h"
#include "tests/tokenizer/test_util.h"

namespace brickserve {
namespace {

bool IsValidUtf8(const std::string& s) { return unicode::SanitizeUtf8(s) == s; }

// Streams `ids` (after `prefix`, if any); checks every piece and returns their concatenation.
std::string Stream(const Tokenizer& tok, const std::vector<int32_t>& prefix, const std::vector<int32_t>& ids, bool skip,
                   const std::string& context) {
  IncrementalDecoder dec(tok, skip);
  if (!prefix.empty()) dec.SetPrefix(prefix);
  std::string out;
  for (int32_t id : ids) {
    const std::string piece = dec.Add(id);
    EXPECT_TRUE(IsValidUtf8(piece)) << context << ": piece " << testing::PrintToString(piece);
    out += piece;
  }
  const std::string rest = dec.Flush();
  EXPECT_TRUE(IsValidUtf8(rest)) << context;
  return out + rest;
}

// Random ids that favour what is hard to stream: byte tokens, specials, short tokens.
std::vector<int32_t> RandomIds(std::mt19937& rng, int32_t vocab, size_t n) {
  std::vector<int32_t> ids(n);
  for (auto& id : ids) {
    const uint32_t r = rng() % 10;
    id = static_cast<int32_t>(r < 5 ? rng() % std::min(vocab, 600) : r < 6 ? vocab - 1 - static_cast<int32_t>(rng() % 30)
                                                                           : static_cast<int32_t>(rng() % vocab));
  }
  return ids;
}

TEST(IncrementalDecoder, RandomIdsStreamToTheFullDecode) {
  const auto real = tokenizer_test::RealTokenizers();
  if (real.empty()) GTEST_SKIP() << tokenizer_test::kNoRealTokenizers;
  std::mt19937 rng(20261122);  // fixed: the same sequences every run
  for (const auto& r : real) {
    auto tok = tokenizer_test::LoadReal(r);
    ASSERT_NE(tok, nullptr);
    for (int round = 0; round < 400; ++round) {
      const auto ids = RandomIds(rng, tok->vocab_size(), 1 + rng() % 40);
      const bool skip = round % 2 == 0;
      const std::string context = r.name + " round " + std::to_string(round) + " ids " + testing::PrintToString(ids);
      EXPECT_EQ(Stream(*tok, {}, ids, skip, context), tok->Decode(ids, skip)) << context;
    }
  }
}

TEST(IncrementalDecoder, TextAfterAPromptStreamsToWhatItAddsToThePrompt) {
  const auto real = tokenizer_test::RealTokenizers();
  if (real.empty()) GTEST_SKIP() << tokenizer_test::kNoRealTokenizers;
  const std::vector<std::string> texts = {"Hello, wörld! 你好，世界 👨‍👩‍👧 naïve café", "int main() {\n  return 0;\n}",
                                          "日本語のテキストと絵文字🎉🎉", "  spaced   out\t\ttabs\n\nend", " Don't stop .",
                                          "<s>x</s> y <|im_end|>z"};
  std::mt19937 rng(7);
  for (const auto& r : real) {
    auto tok = tokenizer_test::LoadReal(r);
    ASSERT_NE(tok, nullptr);
    const auto prompt = tok->Encode("Prompt:", true);
    const std::string prompt_text = tok->DecodeVerbatim(prompt, true);
    for (int round = 0; round < 60; ++round) {
      std::vector<int32_t> ids = round < static_cast<int>(texts.size())
                                     ? tok->Encode(texts[round], false)
                                     : RandomIds(rng, tok->vocab_size(), 1 + rng() % 30);
      std::vector<int32_t> all = prompt;
      all.insert(all.end(), ids.begin(), ids.end());
      const std::string full = tok->DecodeVerbatim(all, true);
      ASSERT_EQ(full.compare(0, prompt_text.size(), prompt_text), 0) << r.name;
      std::string added = full.substr(prompt_text.size());
      if (tok->clean_up_tokenization_spaces()) added = CleanUpTokenization(added);
      EXPECT_EQ(Stream(*tok, prompt, ids, true, r.name), added) << r.name << " round " << round;
    }
  }
}

TEST(IncrementalDecoder, HoldsBackIncompleteCharacters) {
  auto tok = tokenizer_test::LoadJson(tokenizer_test::TinyTokenizerJson());
  ASSERT_TRUE(tok.ok()) << tok.status();
  const int32_t kByte0 = 8;  // <0x00> in the tiny vocabulary
  IncrementalDecoder dec(**tok, false);
  EXPECT_EQ(dec.Add(6), "a");              // "▁a": the leading space is stripped at the start
  EXPECT_EQ(dec.Add(kByte0 + 0xE4), "");   // 你 = E4 BD A0
  EXPECT_EQ(dec.Add(kByte0 + 0xBD), "");
  EXPECT_EQ(dec.Add(kByte0 + 0xA0), "你");
  EXPECT_EQ(dec.Add(6), " a");
  EXPECT_EQ(dec.Add(kByte0 + 0xF0), "");   // an incomplete emoji at the end flushes as U+FFFD
  EXPECT_EQ(dec.Flush(), "\xEF\xBF\xBD");
}

TEST(CleanUp, MatchesTransformersJs) {
  EXPECT_EQ(CleanUpTokenization("Hello , world . Is it ? Yes ! I 'm here , don 't"), "Hello, world. Is it? Yes! I'm here, don 't");
  EXPECT_EQ(CleanUpTokenization("do n't"), "don't");
  // Sequential, as in JavaScript: " ' " -> "'" makes a " n't" that the next step removes.
  EXPECT_EQ(CleanUpTokenization("x n ' t"), "xn't");
  EXPECT_EQ(CleanUpTokenization(" 's 've 're 'm"), "'s've're'm");
}

TEST(CleanUp, StreamedEqualsWhole) {
  std::mt19937 rng(3);
  const std::string alphabet = " .?!,'ntmsvrex";
  for (int round = 0; round < 3000; ++round) {
    std::string text;
    for (size_t n = rng() % 30; n > 0; --n) text += alphabet[rng() % alphabet.size()];
    std::vector<std::string> held;
    std::string streamed;
    for (size_t pos = 0; pos < text.size();) {
      const size_t len = std::min<size_t>(text.size() - pos, rng() % 4);
      streamed += CleanUpPush(text.substr(pos, len), &held);
      pos += len;
    }
    streamed += CleanUpFlush(&held);
    EXPECT_EQ(streamed, CleanUpTokenization(text)) << testing::PrintToString(text);
  }
}

}  // namespace
}  // namespace brickserve
