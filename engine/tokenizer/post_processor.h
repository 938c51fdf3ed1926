// tokenizer.json "post_processor" for single sequences: the special tokens that encoding with
// add_special_tokens=true puts before and after the text (transformers.js semantics; it ignores
// tokenizer_config.json's add_bos_token/add_eos_token, and so does this).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json_fwd.hpp"

namespace brickserve {

struct SpecialTokenFrame {
  std::vector<std::string> prefix;  // token strings
  std::vector<std::string> suffix;
};

// Supported: TemplateProcessing (its "single" template), ByteLevel (adds nothing), BertProcessing
// and RobertaProcessing (cls ... sep), Sequence of these. Null adds nothing.
absl::StatusOr<SpecialTokenFrame> ParsePostProcessor(const nlohmann::json& config, const std::string& where);

}  // namespace brickserve
