// Loading errors, special tokens, BOS/EOS and the malformed UTF-8 policy.
#include "engine/tokenizer/tokenizer.h"

#include <algorithm>
#include <chrono>
#include <random>
#include <thread>

#include "engine/tokenizer/clean_up.h"
#include "engine/tokenizer/unicode_util.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/tokenizer/test_util.h"

namespace brickserve {
namespace {

using nlohmann::json;
using tokenizer_test::kSp;
using tokenizer_test::LoadJson;
using tokenizer_test::TinyTokenizerJson;
using tokenizer_test::WriteTemp;

std::string LoadError(const json& j, const json& config = json::object()) {
  auto t = LoadJson(j, config);
  return t.ok() ? "(loaded)" : std::string(t.status().message());
}

TEST(TokenizerLoad, UnsupportedModelTypeNamesFieldAndValue) {
  auto j = TinyTokenizerJson();
  j["model"]["type"] = "WordPiece";
  EXPECT_EQ(LoadError(j), "tokenizer.json: model.type \"WordPiece\" is not supported (supported: BPE)");
}

TEST(TokenizerLoad, MissingFileIsNotFound) {
  auto t = Tokenizer::Load("/nonexistent/tokenizer.json", "");
  EXPECT_EQ(t.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(t.status().message().find("/nonexistent/tokenizer.json"), std::string::npos);
  // A missing tokenizer_config.json is not an error: its defaults apply.
  auto ok = Tokenizer::Load(WriteTemp("tokenizer.json", TinyTokenizerJson().dump()), "/nonexistent/tokenizer_config.json");
  EXPECT_TRUE(ok.ok()) << ok.status();
}

TEST(TokenizerLoad, MalformedJsonIsAnErrorNotAnException) {
  for (const char* text : {"{\"model\": ", "[1, 2]", "", "{\"model\": {\"vocab\": {\"a\": 0}}"}) {
    auto t = Tokenizer::Load(WriteTemp("bad.json", text), "");
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << text;
  }
  auto t = Tokenizer::Load(WriteTemp("bad.json", "{\"model\": "), "");
  EXPECT_NE(t.status().message().find("is not valid JSON"), std::string::npos) << t.status();
  auto c = Tokenizer::Load(WriteTemp("tokenizer.json", TinyTokenizerJson().dump()), WriteTemp("cfg.json", "{,}"));
  EXPECT_NE(c.status().message().find("tokenizer_config.json"), std::string::npos) << c.status();
}

TEST(TokenizerLoad, WrongTypesAreErrorsNamingTheField) {
  struct Case {
    std::function<void(json&)> mutate;
    std::string message_part;
  };
  const std::vector<Case> cases = {
      {[](json& j) { j["model"]["vocab"]["a"] = "four"; }, "model.vocab[\"a\"]"},
      {[](json& j) { j["model"]["merges"][0] = 7; }, "model.merges[0]"},
      {[](json& j) { j["model"]["merges"][0] = "a b c"; }, "model.merges[0] \"a b c\""},
      {[](json& j) { j["model"]["byte_fallback"] = "yes"; }, "model.byte_fallback must be true or false"},
      {[](json& j) { j["model"].erase("merges"); }, "model.merges is missing"},
      {[](json& j) { j["added_tokens"][0]["id"] = "zero"; }, "added_tokens[0].id must be an integer"},
      {[](json& j) { j["normalizer"]["normalizers"][0]["prepend"] = 5; }, "normalizer.normalizers[0].prepend must be a string"},
      {[](json& j) { j["decoder"]["decoders"][3]["start"] = "1"; }, "decoder.decoders[3].start must be an integer"},
      {[](json& j) { j["post_processor"]["single"] = "A"; }, "post_processor.single must be an array"},
      {[](json& j) { j["post_processor"]["single"][0]["SpecialToken"]["id"] = "<nope>"; }, "\"<nope>\" is not in the vocabulary"},
      {[](json& j) { j["pre_tokenizer"] = 3; }, "pre_tokenizer must be an object or null"},
  };
  for (const auto& c : cases) {
    auto j = TinyTokenizerJson();
    c.mutate(j);
    const std::string error = LoadError(j);
    EXPECT_NE(error.find(c.message_part), std::string::npos) << error;
  }
  EXPECT_NE(LoadError(TinyTokenizerJson(), {{"clean_up_tokenization_spaces", "yes"}}).find(
                "tokenizer_config.json: clean_up_tokenization_spaces must be true or false"),
            std::string::npos);
}

TEST(TokenizerLoad, RefusesWhatItDoesNotImplement) {
  struct Case {
    std::function<void(json&)> mutate;
    std::string message;
  };
  const std::vector<Case> cases = {
      {[](json& j) { j["model"]["continuing_subword_prefix"] = "##"; },
       "tokenizer.json: model.continuing_subword_prefix \"##\" is not supported (supported: null or \"\")"},
      {[](json& j) { j["model"]["dropout"] = 0.1; }, "tokenizer.json: model.dropout 0.1 is not supported"},
      {[](json& j) { j["normalizer"] = {{"type", "Lowercase"}}; }, "tokenizer.json: normalizer.type \"Lowercase\" is not supported"},
      {[](json& j) { j["normalizer"]["normalizers"][1]["pattern"] = {{"Regex", " +"}}; },
       "tokenizer.json: normalizer.normalizers[1].pattern {\"Regex\":\" +\"} is not supported"},
      {[](json& j) { j["pre_tokenizer"] = {{"type", "Whitespace"}}; }, "tokenizer.json: pre_tokenizer.type \"Whitespace\" is not supported"},
      {[](json& j) { j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "\\d"}}}, {"behavior", "MergedWithPrevious"}}; },
       "tokenizer.json: pre_tokenizer.behavior \"MergedWithPrevious\" is not supported (supported: Isolated)"},
      {[](json& j) { j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "\\bx"}}}, {"behavior", "Isolated"}}; },
       "\\b and \\B are not supported"},
      {[](json& j) { j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(("}}}, {"behavior", "Isolated"}}; },
       "does not compile"},
      {[](json& j) { j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", kSp}, {"prepend_scheme", "always"}, {"split", true}}; },
       "Metaspace without add_prefix_space"},
      {[](json& j) { j["decoder"] = {{"type", "WordPiece"}}; }, "tokenizer.json: decoder.type \"WordPiece\" is not supported"},
      {[](json& j) { j["post_processor"] = {{"type", "Unknown"}}; }, "tokenizer.json: post_processor.type \"Unknown\" is not supported"},
      {[](json& j) { j["added_tokens"][1]["single_word"] = true; }, "single_word=true is not supported"},
      {[](json& j) { j["added_tokens"][1]["normalized"] = true; }, "normalized=true with a normalizer is not supported"},
  };
  for (const auto& c : cases) {
    auto j = TinyTokenizerJson();
    c.mutate(j);
    const std::string error = LoadError(j);
    EXPECT_NE(error.find(c.message), std::string::npos) << "got: " << error << "\nwant: " << c.message;
  }
  EXPECT_NE(LoadError(TinyTokenizerJson(), {{"tokenizer_class", "VitsTokenizer"}}).find("tokenizer_class"), std::string::npos);
  EXPECT_NE(LoadError(TinyTokenizerJson(), {{"remove_space", true}}).find("remove_space"), std::string::npos);
}

TEST(Tokenizer, BosFromTemplateAndSpecialTokens) {
  auto tok = LoadJson(TinyTokenizerJson(), {{"bos_token", "<s>"}, {"eos_token", {{"__type", "AddedToken"}, {"content", "</s>"}}}});
  ASSERT_TRUE(tok.ok()) << tok.status();
  const Tokenizer& t = **tok;
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_EQ(t.eos_id(), 2);
  EXPECT_TRUE(t.is_special(0) && t.is_special(1) && t.is_special(2));
  EXPECT_FALSE(t.is_special(3));
  // "ab a" -> "▁ab▁a": ▁+a merges first (rank 0), leaving b; then ▁a.
  EXPECT_EQ(t.Encode("ab a", true), (std::vector<int32_t>{1, 6, 5, 6}));
  EXPECT_EQ(t.Encode("ab a", false), (std::vector<int32_t>{6, 5, 6}));
  // Special-token text is the token; the text after it is a new section (its own ▁ prefix).
  EXPECT_EQ(t.Encode("a</s>b", false), (std::vector<int32_t>{6, 2, 3, 5}));
  EXPECT_EQ(t.Decode(t.Encode("a</s>b", true), false), "<s> a</s> b");
  EXPECT_EQ(t.Decode(t.Encode("a</s>b", true), true), "a b");
  EXPECT_EQ(t.token_string(6), "\u2581a");
  EXPECT_EQ(t.token_id("ab"), 7);
  EXPECT_EQ(t.token_id("zzz"), std::nullopt);
  EXPECT_EQ(t.vocab_size(), 8 + 256);
}

TEST(Tokenizer, EosFromTemplateSuffixAndClsSep) {
  auto j = TinyTokenizerJson();
  j["post_processor"]["single"].push_back({{"SpecialToken", {{"id", "</s>"}, {"type_id", 0}}}});
  auto tok = LoadJson(j);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->Encode("a", true), (std::vector<int32_t>{1, 6, 2}));
  EXPECT_EQ((*tok)->Encode("a", false), (std::vector<int32_t>{6}));
  j["post_processor"] = {{"type", "RobertaProcessing"}, {"cls", {"<s>", 1}}, {"sep", {"</s>", 2}}};
  tok = LoadJson(j);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->Encode("a", true), (std::vector<int32_t>{1, 6, 2}));
  // tokenizer_config's add_bos_token/add_eos_token do not override the post-processor (as in
  // transformers.js); without one, nothing is added.
  j["post_processor"] = nullptr;
  tok = LoadJson(j, {{"add_bos_token", true}, {"add_eos_token", true}});
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->Encode("a", true), (std::vector<int32_t>{6}));
}

TEST(Tokenizer, AddedTokensLongestMatchAndStrip) {
  auto j = TinyTokenizerJson();
  j["added_tokens"].push_back({{"id", 300}, {"content", "<x>"}, {"special", false}, {"lstrip", true}, {"rstrip", true}});
  j["added_tokens"].push_back({{"id", 301}, {"content", "<x><x>"}, {"special", true}});
  auto tok = LoadJson(j);
  ASSERT_TRUE(tok.ok()) << tok.status();
  const Tokenizer& t = **tok;
  EXPECT_EQ(t.vocab_size(), 302);
  EXPECT_EQ(t.Encode("<x><x><x>", false), (std::vector<int32_t>{301, 300}));  // longest first
  // lstrip/rstrip eat the whitespace around <x>: "a <x> b" -> "a", <x>, "b".
  EXPECT_EQ(t.Encode("a \t<x>  b", false), (std::vector<int32_t>{6, 300, 3, 5}));
  // Non-special added tokens survive skip_special_tokens; special ones do not.
  EXPECT_EQ(t.Decode(std::vector<int32_t>{300, 301, 6}, true), "<x> a");
}

TEST(Tokenizer, MalformedUtf8IsReadAsReplacementCharacters) {
  // Policy: each maximal invalid subsequence becomes one U+FFFD (the WHATWG decoder's rule, i.e.
  // the text a JavaScript caller would hold after TextDecoder), then tokenization proceeds.
  EXPECT_EQ(unicode::SanitizeUtf8("a\xC3(b"), "a\xEF\xBF\xBD(b");
  EXPECT_EQ(unicode::SanitizeUtf8("\xE2\x82"), "\xEF\xBF\xBD");                                // truncated: one
  EXPECT_EQ(unicode::SanitizeUtf8("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate: three
  EXPECT_EQ(unicode::SanitizeUtf8("\xC0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD");                  // overlong
  EXPECT_EQ(unicode::SanitizeUtf8("\xF4\x90\x80\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // > U+10FFFF
  EXPECT_EQ(unicode::SanitizeUtf8("\xF0\x9F\x98\x80"), "\xF0\x9F\x98\x80");  // valid kept
  EXPECT_EQ(unicode::SanitizeUtf8(std::string("a\0b", 3)), std::string("a\0b", 3));
  auto tok = LoadJson(TinyTokenizerJson());
  ASSERT_TRUE(tok.ok());
  EXPECT_EQ((*tok)->Encode("ab\xFF", true), (*tok)->Encode("ab\xEF\xBF\xBD", true));
  EXPECT_EQ((*tok)->Encode("\xE4\xBD", false), (*tok)->Encode("\xEF\xBF\xBD", false));
  EXPECT_EQ((*tok)->Decode((*tok)->Encode("x\x80y", false), false), "x\xEF\xBF\xBDy");
  for (const auto& real : tokenizer_test::RealTokenizers()) {
    auto t = tokenizer_test::LoadReal(real);
    ASSERT_NE(t, nullptr);
    for (const std::string bad : {"\xFF", "caf\xC3", "\xED\xA0\x80x", "\xC0\xAF", "ok\xF8\x88\x80\x80\x80"}) {
      const auto ids = t->Encode(bad, false);
      EXPECT_EQ(ids, t->Encode(unicode::SanitizeUtf8(bad), false)) << real.name;
      EXPECT_EQ(t->Decode(ids, false), unicode::SanitizeUtf8(bad)) << real.name;
    }
  }
}

TEST(Tokenizer, RealTokenizersSpecialTokensAndBos) {
  bool any = false;
  for (const auto& real : tokenizer_test::RealTokenizers()) {
    auto t = tokenizer_test::LoadReal(real);
    ASSERT_NE(t, nullptr);
    any = true;
    if (real.name == "brick-tiny" || real.name == "llama2") {
      EXPECT_EQ(t->bos_id(), 1);
      EXPECT_EQ(t->eos_id(), 2);
      EXPECT_EQ(t->Encode("x", true).front(), 1);
      EXPECT_NE(t->Encode("x", false).front(), 1);
      const auto ids = t->Encode("a</s>b", false);
      EXPECT_NE(std::find(ids.begin(), ids.end(), 2), ids.end());  // special-token text is the token
      EXPECT_TRUE(t->is_special(2));
    } else if (real.name == "llama3") {
      // This tokenizer.json's post-processor is ByteLevel only: no <|begin_of_text|> is added.
      EXPECT_EQ(t->Encode("Hello", true), t->Encode("Hello", false));
      EXPECT_EQ(t->Encode("<|begin_of_text|>Hi", false).front(), 128000);
      EXPECT_EQ(t->bos_id(), 128000);
      EXPECT_TRUE(t->is_special(128000));
    } else if (real.name == "qwen3") {
      EXPECT_EQ(t->Encode("Hello", true), t->Encode("Hello", false));
      EXPECT_EQ(t->bos_id(), std::nullopt);
      const int32_t im_end = *t->token_id("<|im_end|>"), think = *t->token_id("<think>");
      EXPECT_EQ(t->eos_id(), im_end);
      EXPECT_TRUE(t->is_special(im_end));
      EXPECT_FALSE(t->is_special(think));  // added but not special: kept by skip_special_tokens
      EXPECT_EQ(t->Decode(t->Encode("<|im_start|><think>x</think><|im_end|>", true), true), "<think>x</think>");
    }
  }
  if (!any) GTEST_SKIP() << tokenizer_test::kNoRealTokenizers;
}

// English-like text of about `bytes` bytes, the same every run.
std::string EnglishText(size_t bytes) {
  static const std::vector<std::string> words = {
      "the", "of", "and", "to", "in", "is", "was", "for", "on", "that", "with", "as", "by", "at", "from", "kernel",
      "memory", "device", "driver", "schedule", "buffer", "process", "thread", "signal", "function", "value",
      "return", "Hello", "world", "licence", "software", "distribution", "copyright", "warranty", "modified",
      "version", "program", "conditions", "terms", "Section", "(a)", "1.", "2,", "don't", "it's", "\n", "--", "e.g."};
  std::mt19937 rng(11);
  std::string text;
  while (text.size() < bytes) {
    const std::string& w = words[rng() % words.size()];
    text += w;
    text += rng() % 12 == 0 ? ".\n" : " ";
  }
  return text;
}

TEST(Tokenizer, ConcurrentUseGivesTheSameIds) {
  const auto real = tokenizer_test::RealTokenizers();
  if (real.empty()) GTEST_SKIP() << tokenizer_test::kNoRealTokenizers;
  for (const auto& r : real) {
    auto tok = tokenizer_test::LoadReal(r);
    ASSERT_NE(tok, nullptr);
    const std::string text = EnglishText(20000) + "你好，世界 🎉 " + std::string(300, 'a');
    const auto want = tok->Encode(text, true);
    std::vector<std::vector<int32_t>> got(4);
    std::vector<std::thread> threads;
    for (auto& g : got) threads.emplace_back([&] { g = tok->Encode(text, true); });
    for (auto& t : threads) t.join();
    for (const auto& g : got) EXPECT_EQ(g, want) << r.name;
  }
}

// Not a benchmark, a guard against pathological slowness: 1 MB of English must encode in well
// under a second (measured ~0.1-0.2 s in Release on one core). Prints the time.
TEST(Tokenizer, EncodesAMegabyteQuickly) {
  const auto real = tokenizer_test::RealTokenizers();
  if (real.empty()) GTEST_SKIP() << tokenizer_test::kNoRealTokenizers;
  const std::string text = EnglishText(1 << 20);
  for (const auto& r : real) {
    auto tok = tokenizer_test::LoadReal(r);
    ASSERT_NE(tok, nullptr);
    const auto start = std::chrono::steady_clock::now();
    const auto ids = tok->Encode(text, false);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("%s: encoded %zu bytes to %zu ids in %.3f s\n", r.name.c_str(), text.size(), ids.size(), seconds);
    EXPECT_EQ(tok->Decode(ids, false), tok->clean_up_tokenization_spaces() ? CleanUpTokenization(text) : text) << r.name;
#ifdef NDEBUG
    EXPECT_LT(seconds, 3.0) << r.name;  // generous: shared CI machines
#endif
  }
}

}  // namespace
}  // namespace brickserve
