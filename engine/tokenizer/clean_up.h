// transformers' clean_up_tokenization (" ." -> "." etc.), whole and streamed.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace brickserve {

// The ten replacements of transformers.js' clean_up_tokenization, applied one after another.
std::string CleanUpTokenization(std::string_view text);

// The same on text that arrives in pieces. `held` keeps, per replacement, the tail that could
// still start a match (plain ASCII, so no character is ever split). The concatenation of all
// CleanUpPush results and the final CleanUpFlush equals CleanUpTokenization of all the pieces.
std::string CleanUpPush(std::string_view piece, std::vector<std::string>* held);
std::string CleanUpFlush(std::vector<std::string>* held);

}  // namespace brickserve
