// tokenizer.json "pre_tokenizer": splits a normalized section into the words the BPE model
// merges within (byte-level ones already mapped to GPT-2's printable characters).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "nlohmann/json_fwd.hpp"

namespace brickserve {

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // `first_section`: the section is the first of the text (no added token before it), which
  // Metaspace's prepend_scheme "first" looks at.
  virtual std::vector<std::string> Split(std::vector<std::string> words, bool first_section) const = 0;
};

// Supported: Sequence, Split (Regex or String pattern, behavior Isolated, invert false),
// ByteLevel (GPT-2 regex when use_regex), Metaspace. Others are refused. Null yields nullptr.
absl::StatusOr<std::unique_ptr<PreTokenizer>> MakePreTokenizer(const nlohmann::json& config, const std::string& where);

// Metaspace as transformers.js runs it (also what LlamaTokenizer with legacy=false installs):
// spaces become `replacement`, which is prepended unless the text starts with it, when
// `add_prefix_space` and prepend_scheme allow ("always", or "first" on the first section).
std::unique_ptr<PreTokenizer> MakeMetaspace(std::string replacement, bool add_prefix_space, std::string prepend_scheme);

}  // namespace brickserve
