// Tokenizer for Hugging Face `tokenizer.json` files (BPE models): byte-level BPE (Llama 3, Qwen2) and
// SentencePiece-style BPE with byte fallback (Llama 2, Mistral), with added/special tokens and the
// BOS/EOS behaviour of `tokenizer_config.json`.
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
  // (add_bos_token / add_eos_token / bos_token / eos_token). Unsupported model types, normalizers,
  // pre-tokenizers or decoders are refused with an error naming the field and the value.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(const std::string& tokenizer_json_path,
                                                         const std::string& tokenizer_config_path);
  virtual ~Tokenizer() = default;

  // Encodes text. Special/added tokens written in the text are recognised as such. With
  // `add_special_tokens`, BOS/EOS are added as tokenizer_config.json says (transformers' default).
  virtual std::vector<int32_t> Encode(std::string_view text, bool add_special_tokens) const = 0;

  // Decodes ids to text (transformers.js / tokenizers semantics). Invalid UTF-8 produced by byte
  // tokens is replaced by U+FFFD.
  virtual std::string Decode(std::span<const int32_t> ids, bool skip_special_tokens) const = 0;
  // Decode without transformers' clean_up_tokenization_spaces (" ." -> "." etc.), which would
  // change text at piece boundaries; streamed generation uses this.
  virtual std::string DecodeVerbatim(std::span<const int32_t> ids, bool skip_special_tokens) const = 0;

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
  const Tokenizer& tokenizer_;
  bool skip_special_;
  std::vector<int32_t> ids_;
  size_t prefix_offset_ = 0;  // ids_[prefix_offset_..read_offset_) decode to already-emitted text
  size_t read_offset_ = 0;
};

}  // namespace brickserve
