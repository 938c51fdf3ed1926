// Streaming detokenization (the vLLM/TGI scheme): decode a short window of context tokens with
// and without the new ones, and emit the difference once it no longer ends in an incomplete
// character. The window keeps context-dependent decoding (a SentencePiece leading space) right.
#include <algorithm>

#include "engine/tokenizer/tokenizer.h"
#include "engine/tokenizer/unicode_util.h"

namespace brickserve {
namespace {

constexpr size_t kContextTokens = 5;
constexpr std::string_view kReplacement = "\xEF\xBF\xBD";

bool EndsWithReplacement(const std::string& s) {
  return s.size() >= 3 && std::string_view(s).substr(s.size() - 3) == kReplacement;
}

}  // namespace

IncrementalDecoder::IncrementalDecoder(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tokenizer_(tokenizer), skip_special_(skip_special_tokens) {}

void IncrementalDecoder::SetPrefix(std::span<const int32_t> prefix_ids) {
  ids_.assign(prefix_ids.begin(), prefix_ids.end());
  read_offset_ = ids_.size();
  prefix_offset_ = ids_.size() > kContextTokens ? ids_.size() - kContextTokens : 0;
}

std::string IncrementalDecoder::Add(int32_t id) {
  ids_.push_back(id);
  const std::span<const int32_t> all(ids_);
  const std::string prefix_text =
      tokenizer_.DecodeVerbatim(all.subspan(prefix_offset_, read_offset_ - prefix_offset_), skip_special_);
  const std::string new_text = tokenizer_.DecodeVerbatim(all.subspan(prefix_offset_), skip_special_);
  // A trailing U+FFFD means the last bytes do not form a character yet: wait for more tokens.
  if (new_text.size() > prefix_text.size() && !EndsWithReplacement(new_text) &&
      new_text.compare(0, prefix_text.size(), prefix_text) == 0) {
    std::string piece = new_text.substr(prefix_text.size());
    prefix_offset_ = read_offset_;
    read_offset_ = ids_.size();
    return piece;
  }
  return {};
}

std::string IncrementalDecoder::Flush() {
  if (read_offset_ >= ids_.size()) return {};
  const std::span<const int32_t> all(ids_);
  const std::string prefix_text =
      tokenizer_.DecodeVerbatim(all.subspan(prefix_offset_, read_offset_ - prefix_offset_), skip_special_);
  const std::string new_text = tokenizer_.DecodeVerbatim(all.subspan(prefix_offset_), skip_special_);
  prefix_offset_ = read_offset_ = ids_.size();
  if (new_text.size() > prefix_text.size() && new_text.compare(0, prefix_text.size(), prefix_text) == 0) {
    return new_text.substr(prefix_text.size());
  }
  return {};
}

}  // namespace brickserve
