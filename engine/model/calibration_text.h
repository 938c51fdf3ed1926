// The built-in calibration text of the core map: varied English (prose, dialogue, a list, code, numbers,
// a table) with the delimiters massive activations show up at (sentence ends, newlines, commas, quotes).
#pragma once

#include <string_view>

namespace brickserve {

// A few hundred tokens for a Llama-style tokenizer. Encode it with the model's special tokens (BOS):
// the first token is where massive activations are largest. (std::string_view: Tokenizer::Encode's type.)
std::string_view DefaultCalibrationText();

}  // namespace brickserve
