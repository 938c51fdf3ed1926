// UTF-8 helpers shared by the tokenizer: lossy decoding with the WHATWG (TextDecoder) rules, code
// point iteration, and GPT-2's byte <-> printable-character table for byte-level BPE.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace brickserve::unicode {

// Replaces every ill-formed subsequence with U+FFFD exactly as the WHATWG UTF-8 decoder (and so
// JavaScript's TextDecoder) does: one U+FFFD per maximal subpart. With `strip_bom`, a leading
// U+FEFF is dropped (TextDecoder's default).
std::string SanitizeUtf8(std::string_view bytes, bool strip_bom = false);

// Length in bytes of the UTF-8 sequence starting with `lead` (1 for invalid leads).
int Utf8SequenceLength(unsigned char lead);

void AppendUtf8(uint32_t code_point, std::string* out);

// JavaScript's String.prototype.trim whitespace set.
bool IsJsWhitespace(uint32_t code_point);
std::string TrimJsWhitespace(std::string_view text, bool left, bool right);

// GPT-2 byte-level mapping: each byte to a printable code point (UTF-8 encoded), and back.
const std::vector<std::string>& ByteToUnicode();
// Returns -1 when `code_point` is not one of the 256 mapped characters.
int UnicodeToByte(uint32_t code_point);

// Decodes one code point from valid UTF-8 at `pos`, advancing it (an invalid byte reads as itself).
uint32_t NextCodePoint(std::string_view text, size_t* pos);

}  // namespace brickserve::unicode
