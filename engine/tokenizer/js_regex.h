// The regular expressions of tokenizer.json Split pre-tokenizers, with the meaning transformers.js
// gives them: the pattern is rewritten as transformers.js rewrites it, then compiled by ICU with
// JavaScript's "u"-mode classes (\s, \d, \w, .) written out, since ICU's differ.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

#include <unicode/uversion.h>

U_NAMESPACE_BEGIN
class RegexPattern;
U_NAMESPACE_END

namespace brickserve {

class JsRegex {
 public:
  // `source` is the pattern as tokenizer.json writes it ({"Regex": source}); `literal` compiles a
  // {"String": source} pattern. `where` prefixes errors.
  static absl::StatusOr<std::unique_ptr<JsRegex>> Compile(std::string_view source, bool literal,
                                                          const std::string& where);
  ~JsRegex();

  // transformers.js regexSplit: the text between matches and the (non-empty) matches, in order.
  std::vector<std::string> SplitIsolated(std::string_view text) const;

  // String.match with "g": the non-empty matches only.
  std::vector<std::string> Matches(std::string_view text) const;

  // The ICU pattern (for tests and error messages).
  const std::string& icu_pattern() const { return icu_pattern_; }

 private:
  JsRegex(std::unique_ptr<icu::RegexPattern> pattern, std::string icu_pattern);
  std::vector<std::string> Split(std::string_view text, bool keep_gaps) const;
  std::unique_ptr<icu::RegexPattern> pattern_;
  std::string icu_pattern_;
};

// The rewrite alone: transformers.js' fix-ups, then JavaScript semantics in ICU syntax. Errors for
// constructs whose meaning differs and is not rewritten (\b, \B).
absl::StatusOr<std::string> JsPatternToIcu(std::string_view source);

}  // namespace brickserve
