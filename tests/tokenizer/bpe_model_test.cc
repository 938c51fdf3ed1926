// BPE merge semantics on small hand-made models (the oracle covers the real ones): merge order,
// ties, results outside the vocabulary, ignore_merges, fuse_unk, byte fallback, long words.
#include <string>
#include <vector>

#include "engine/tokenizer/tokenizer.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/tokenizer/test_util.h"

namespace brickserve {
namespace {

using nlohmann::json;
using tokenizer_test::LoadJson;

// A model with no normalizer or pre-tokenizer: each added-token-free text is one word.
json PlainModel(json vocab, json merges, json extra = json::object()) {
  json model = {{"type", "BPE"}, {"vocab", std::move(vocab)}, {"merges", std::move(merges)}};
  model.update(extra);
  return {{"model", model}, {"added_tokens", json::array()}};
}

std::vector<int32_t> Encode(const json& tokenizer_json, const std::string& text) {
  auto tok = LoadJson(tokenizer_json);
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? (*tok)->Encode(text, false) : std::vector<int32_t>{};
}

TEST(BpeModel, LowestRankFirstThenLeftmost) {
  const json vocab = {{"a", 0}, {"b", 1}, {"ab", 2}, {"ba", 3}, {"aa", 4}};
  // "aba": "b a" (rank 0) beats "a b" (rank 1).
  EXPECT_EQ(Encode(PlainModel(vocab, {"b a", "a b"}), "aba"), (std::vector<int32_t>{0, 3}));
  EXPECT_EQ(Encode(PlainModel(vocab, {"a b", "b a"}), "aba"), (std::vector<int32_t>{2, 0}));
  // "aaa": one rank for both pairs; the leftmost merges.
  EXPECT_EQ(Encode(PlainModel(vocab, {"a a"}), "aaa"), (std::vector<int32_t>{4, 0}));
  // Both merge formats: ["a", "b"] pairs (tokenizers >= 0.20) and "a b" strings.
  EXPECT_EQ(Encode(PlainModel(vocab, json::array({json::array({"a", "b"})})), "ab"), (std::vector<int32_t>{2}));
}

TEST(BpeModel, MergesThroughStringsOutsideTheVocabulary) {
  // "xy" is no token, but "xy z" still merges to "xyz" (transformers.js merges strings).
  const json vocab = {{"x", 0}, {"y", 1}, {"z", 2}, {"xyz", 3}, {"<unk>", 4}};
  const json m = PlainModel(vocab, {"x y", "xy z"}, {{"unk_token", "<unk>"}});
  EXPECT_EQ(Encode(m, "xyz"), (std::vector<int32_t>{3}));
  // A piece left outside the vocabulary is unknown.
  EXPECT_EQ(Encode(m, "xyx"), (std::vector<int32_t>{4, 0}));
  // A repeated pair keeps its last rank.
  const json vocab2 = {{"a", 0}, {"b", 1}, {"ab", 2}, {"ba", 3}};
  EXPECT_EQ(Encode(PlainModel(vocab2, {"a b", "b a", "a b"}), "aba"), (std::vector<int32_t>{0, 3}));
}

TEST(BpeModel, UnknownTokensFuseAndByteFallback) {
  const json vocab = {{"<unk>", 0}, {"a", 1}, {"<0xC3>", 2}, {"<0xA9>", 3}};
  EXPECT_EQ(Encode(PlainModel(vocab, json::array(), {{"unk_token", "<unk>"}}), "a\u00e9\u00e9a"),
            (std::vector<int32_t>{1, 0, 0, 1}));
  EXPECT_EQ(Encode(PlainModel(vocab, json::array(), {{"unk_token", "<unk>"}, {"fuse_unk", true}}), "a\u00e9\u00fca"),
            (std::vector<int32_t>{1, 0, 1}));
  // byte_fallback: é is <0xC3><0xA9>; ü lacks <0xBC>, so it falls to <unk>.
  EXPECT_EQ(Encode(PlainModel(vocab, json::array(), {{"unk_token", "<unk>"}, {"byte_fallback", true}}), "\u00e9\u00fc"),
            (std::vector<int32_t>{2, 3, 0}));
  // No unknown token: the piece is dropped.
  EXPECT_EQ(Encode(PlainModel(vocab, json::array()), "a\u00e9a"), (std::vector<int32_t>{1, 1}));
}

TEST(BpeModel, IgnoreMergesEmitsVocabularyWordsWhole) {
  // Merges would make "ab" + "c"; with ignore_merges the word "abc" is a token itself.
  const json vocab = {{"a", 0}, {"b", 1}, {"c", 2}, {"ab", 3}, {"abc", 4}};
  EXPECT_EQ(Encode(PlainModel(vocab, {"a b"}), "abc"), (std::vector<int32_t>{3, 2}));
  EXPECT_EQ(Encode(PlainModel(vocab, {"a b"}, {{"ignore_merges", true}}), "abc"), (std::vector<int32_t>{4}));
}

TEST(BpeModel, LongWordsMergeAsShortOnes) {
  // Long words are cut where no merge result has the two characters at the cut next to each
  // other; the pieces must be those of the uncut word.
  const json vocab = {{"a", 0}, {"aa", 1}, {"aaaa", 2}, {"b", 3}, {"ab", 4}, {"c", 5}};
  auto tok = LoadJson(PlainModel(vocab, {"a a", "aa aa", "a b"}));
  ASSERT_TRUE(tok.ok()) << tok.status();
  // No cut possible: a+a occurs inside "aa" and "aaaa".
  std::vector<int32_t> want(75, 2);
  want.push_back(0);
  EXPECT_EQ((*tok)->Encode(std::string(301, 'a'), false), want);
  // Cuts at b|c and c|a; each "aaaaabc" is aaaa, ab, c.
  std::string text;
  want.clear();
  for (int i = 0; i < 100; ++i) {
    text += "aaaaabc";
    want.insert(want.end(), {2, 4, 5});
  }
  EXPECT_EQ((*tok)->Encode(text, false), want);
  EXPECT_EQ((*tok)->Encode("aaaaabc", false), (std::vector<int32_t>{2, 4, 5}));
}

TEST(BpeModel, ByteLevelDecoderPassesUnknownCharactersThrough) {
  // A token with a character outside GPT-2's byte table decodes to its own UTF-8 (HF tokenizers).
  json j = PlainModel({{"a", 0}, {"x\u20ac", 1}, {"\u0120b", 2}, {"\u00c3\u00a9", 3}}, json::array());
  j["decoder"] = {{"type", "ByteLevel"}};
  auto tok = LoadJson(j);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->Decode(std::vector<int32_t>{0, 2, 1, 3}, false), "a bx\u20ac\u00e9");
}

}  // namespace
}  // namespace brickserve
