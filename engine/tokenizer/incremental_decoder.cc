// Streaming detokenization (the vLLM/TGI scheme): decode a short window of context tokens with
// and without the new ones, and emit the difference once it no longer ends in an incomplete
// character. The window keeps context-dependent decoding (a SentencePiece leading space) right.
#include <algorithm>

#include "engine/tokenizer/clean_up.h"
#include "engine/tokenizer/tokenizer.h"

namespace brickserve {
namespace {

// Tokens of already-emitted text kept in front of the new ones.
constexpr size_t kContextTokens = 5;
constexpr std::string_view kReplacement = "\xEF\xBF\xBD";

bool EndsWithReplacement(std::string_view s) {
  return s.size() >= kReplacement.size() && s.substr(s.size() - kReplacement.size()) == kReplacement;
}

bool IsContinuationByte(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

}  // namespace

IncrementalDecoder::IncrementalDecoder(const Tokenizer& tokenizer, bool skip_special_tokens)
    : tokenizer_(tokenizer), skip_special_(skip_special_tokens), clean_up_(tokenizer.clean_up_tokenization_spaces()) {}

void IncrementalDecoder::SetPrefix(std::span<const int32_t> prefix_ids) {
  ids_.assign(prefix_ids.begin(), prefix_ids.end());
  read_offset_ = ids_.size();
  prefix_offset_ = ids_.size() > kContextTokens ? ids_.size() - kContextTokens : 0;
}

std::string IncrementalDecoder::Add(int32_t id) {
  ids_.push_back(id);
  std::string piece = Advance(/*final=*/false);
  return clean_up_ ? CleanUpPush(piece, &clean_up_held_) : piece;
}

std::string IncrementalDecoder::Flush() {
  std::string piece = Advance(/*final=*/true);
  if (!clean_up_) return piece;
  std::string out = CleanUpPush(piece, &clean_up_held_);
  return out + CleanUpFlush(&clean_up_held_);
}

std::string IncrementalDecoder::Advance(bool final) {
  if (read_offset_ >= ids_.size()) return {};
  const std::span<const int32_t> all(ids_);
  const std::string prefix_text =
      tokenizer_.DecodeVerbatim(all.subspan(prefix_offset_, read_offset_ - prefix_offset_), skip_special_);
  const std::string new_text = tokenizer_.DecodeVerbatim(all.subspan(prefix_offset_), skip_special_);
  // A trailing U+FFFD means the last bytes may not form a character yet: wait for more tokens.
  if (!final && EndsWithReplacement(new_text)) return {};
  if (new_text.compare(0, prefix_text.size(), prefix_text) == 0) {
    if (new_text.size() == prefix_text.size() && !final) return {};  // nothing visible yet
    prefix_offset_ = read_offset_;
    read_offset_ = ids_.size();
    return new_text.substr(prefix_text.size());
  }
  if (!final) return {};
  // The new tokens changed text already emitted (not seen with the supported decoders): emit what
  // follows the common part rather than lose it.
  size_t common = std::mismatch(prefix_text.begin(), prefix_text.end(), new_text.begin(), new_text.end()).first -
                  prefix_text.begin();
  while (common > 0 && common < new_text.size() && IsContinuationByte(new_text[common])) --common;
  prefix_offset_ = read_offset_ = ids_.size();
  return new_text.substr(common);
}

}  // namespace brickserve
