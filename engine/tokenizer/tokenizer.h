// Tokenizer for Hugging Face `tokenizer.json` files (BPE models): byte-level BPE (Llama 3, Qwen2) and
// SentencePiece-style BPE with byte fallback (Llama 2, Mistral), with added/special tokens. The
// reference is transformers.js (`tokenizer.encode` / `tokenizer.decode`), checked by the tests in
// tests/tokenizer against it.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace brickserve {

class Tokenizer {
 public:
  // Loads `tokenizer.json`, and `tokenizer_config.json` when the path is non-empty and exists
  // (bos_token, eos_token, clean_up_tokenization_spaces, additional_special_tokens,
  // tokenizer_class + legacy). Configurations not implemented are refused with an error naming the
  // field and the value, e.g. `tokenizer.json: model.type "WordPiece" is not supported (supported:
  // BPE)`; malformed files are errors too (no exception escapes).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& tokenizer_json_path,
                                                         const std::string& tokenizer_config_path);
  virtual ~Tokenizer() = default;

  // Encodes text. Added tokens written in the text are recognised as such. With
  // `add_special_tokens`, the special tokens of tokenizer.json's post_processor are added (a BOS
  // for Llama 2; nothing for Qwen); like transformers.js, add_bos_token/add_eos_token in
  // tokenizer_config.json are not consulted. Malformed UTF-8 reads as U+FFFD, one per maximal
  // invalid subsequence (what a JavaScript string decoded with TextDecoder would hold).
  virtual std::vector<int32_t> Encode(std::string_view text, bool add_special_tokens) const = 0;

  // Decodes ids to text (transformers.js semantics, clean_up_tokenization_spaces included). Invalid
  // UTF-8 produced by byte tokens is replaced by U+FFFD. Ids without a token decode as the unknown
  // token, or to nothing when there is none.
  virtual std::string Decode(std::span<const int32_t> ids, bool skip_special_tokens) const = 0;
  // Decode without transformers' clean_up_tokenization_spaces (" ." -> "." etc.).
  virtual std::string DecodeVerbatim(std::span<const int32_t> ids, bool skip_special_tokens) const = 0;
  // Whether Decode applies clean_up_tokenization_spaces (tokenizer_config.json, default true).
  virtual bool clean_up_tokenization_spaces() const { return false; }

  virtual int32_t vocab_size() const = 0;  // including added tokens
  virtual std::optional<int32_t> bos_id() const = 0;
  virtual std::optional<int32_t> eos_id() const = 0;
  virtual bool is_special(int32_t id) const = 0;
  // The vocabulary string of a token ("" for an out-of-range id).
  virtual std::string_view token_string(int32_t id) const = 0;
  virtual std::optional<int32_t> token_id(std::string_view token) const = 0;
};

// Turns a stream of generated ids into text pieces. Never emits half a UTF-8 character: bytes of an
// incomplete character are held back until the character completes (or Flush() is called).
// Without a prefix, the pieces (Add..., then Flush) concatenate to Decode(ids): a tokenizer's
// clean_up_tokenization_spaces is applied to the stream, holding back a possible " ." etc. With
// SetPrefix, they concatenate to what the ids add to the prefix's text (DecodeVerbatim), cleaned
// up on their own.
class IncrementalDecoder {
 public:
  IncrementalDecoder(const Tokenizer& tokenizer, bool skip_special_tokens);
  // Optionally seeds the decoder with prompt ids so that context-dependent decoding (e.g. the
  // SentencePiece leading-space strip) is right for the first generated token.
  void SetPrefix(std::span<const int32_t> prefix_ids);
  // Adds one id; returns the newly completed text (possibly empty).
  std::string Add(int32_t id);
  // Returns whatever is still held back (incomplete bytes become U+FFFD).
  std::string Flush();

 private:
  // The next verbatim text, or "" while it would end inside a character.
  std::string Advance(bool final);

  const Tokenizer& tokenizer_;
  bool skip_special_;
  std::vector<int32_t> ids_;
  size_t prefix_offset_ = 0;  // ids_[prefix_offset_..read_offset_) decode to already-emitted text
  size_t read_offset_ = 0;
  bool clean_up_;
  std::vector<std::string> clean_up_held_;  // see CleanUpPush
};

}  // namespace brickserve
