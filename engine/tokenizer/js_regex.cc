#include "engine/tokenizer/js_regex.h"

#include <unicode/regex.h>
#include <unicode/unistr.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace brickserve {
namespace {

// JavaScript's \s (WhiteSpace and LineTerminator): ICU's \s is Unicode White_Space, which adds
// U+0085 and lacks U+FEFF.
constexpr char kJsSpace[] =
    "\\t\\n\\x{0B}\\f\\r\\x{20}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}\\x{FEFF}";
constexpr char kJsDigit[] = "0-9";                // \d: ICU's is \p{Nd}
constexpr char kJsWord[] = "A-Za-z0-9_";          // \w: ICU's is Unicode word characters
constexpr char kJsDotExcludes[] = "\\n\\r\\x{2028}\\x{2029}";  // "." stops at these only

// What transformers.js' createPattern does to a tokenizer.json regex before `new RegExp(.., "gu")`.
std::string TransformersJsFixups(std::string_view source) {
  std::string p;
  for (size_t i = 0; i < source.size(); ++i) {
    // replace(/\\([#&~])/g, "$1"): Python escapes that JavaScript's "u" mode rejects.
    if (source[i] == '\\' && i + 1 < source.size() && (source[i + 1] == '#' || source[i + 1] == '&' || source[i + 1] == '~')) {
      continue;
    }
    p += source[i];
  }
  // PROBLEMATIC_REGEX_MAP: JavaScript has no (?i:...) groups.
  return absl::StrReplaceAll(p, {{"(?i:'s|'t|'re|'ve|'m|'ll|'d)", "(?:'([sS]|[tT]|[rR][eE]|[vV][eE]|[mM]|[lL][lL]|[dD]))"},
                                 {" ?[^(\\s|[.,!?\xE2\x80\xA6\xE3\x80\x82\xEF\xBC\x8C\xE3\x80\x81\xE0\xA5\xA4\xDB\x94\xD8\x8C])]+",
                                  " ?[^\\s.,!?\xE2\x80\xA6\xE3\x80\x82\xEF\xBC\x8C\xE3\x80\x81\xE0\xA5\xA4\xDB\x94\xD8\x8C]+"}});
}

}  // namespace

absl::StatusOr<std::string> JsPatternToIcu(std::string_view source) {
  const std::string p = TransformersJsFixups(source);
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char e = p[++i];
      auto cls = [&](const char* members, bool negated) {
        // Inside a class a negated set nests (ICU set syntax); outside it is a class of its own.
        out += in_class ? (negated ? absl::StrCat("[^", members, "]") : std::string(members))
                        : absl::StrCat(negated ? "[^" : "[", members, "]");
      };
      switch (e) {
        case 's': cls(kJsSpace, false); break;
        case 'S': cls(kJsSpace, true); break;
        case 'd': cls(kJsDigit, false); break;
        case 'D': cls(kJsDigit, true); break;
        case 'w': cls(kJsWord, false); break;
        case 'W': cls(kJsWord, true); break;
        case 'b':
        case 'B':
          return absl::InvalidArgumentError("\\b and \\B are not supported");
        case 'p':
        case 'P':
        case 'x':
        case 'u':
          // \p{..}, \x{..}, \u{..}: braces are part of the escape (\u{..} is \x{..} in ICU).
          out += '\\';
          out += e == 'u' && i + 1 < p.size() && p[i + 1] == '{' ? 'x' : e;
          if (i + 1 < p.size() && p[i + 1] == '{') {
            const size_t close = p.find('}', i + 1);
            if (close == std::string::npos) return absl::InvalidArgumentError("unterminated \\p{, \\x{ or \\u{");
            out.append(p, i + 1, close - i);
            i = close;
          }
          break;
        default:
          out += '\\';
          out += e;
      }
      continue;
    }
    if (in_class) {
      // Characters that are literal in a JavaScript class but operators in an ICU set.
      if (c == '[' || c == '&' || c == '{' || c == '}') {
        out += '\\';
        out += c;
        continue;
      }
      if (c == ']') in_class = false;
      out += c;
      continue;
    }
    if (c == '[') {
      in_class = true;
      out += c;
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      continue;
    }
    if (c == '.') {
      out += absl::StrCat("[^", kJsDotExcludes, "]");
      continue;
    }
    out += c;
  }
  return out;
}

absl::StatusOr<std::unique_ptr<JsRegex>> JsRegex::Compile(std::string_view source, bool literal,
                                                          const std::string& where) {
  std::string icu_pattern;
  if (literal) {
    icu_pattern = std::string(source);
  } else {
    auto converted = JsPatternToIcu(source);
    if (!converted.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(where, " regex \"", std::string(source), "\": ", converted.status().message()));
    }
    icu_pattern = *std::move(converted);
  }
  UErrorCode err = U_ZERO_ERROR;
  UParseError parse_error;
  std::unique_ptr<icu::RegexPattern> pattern(icu::RegexPattern::compile(
      icu::UnicodeString::fromUTF8(icu_pattern), literal ? UREGEX_LITERAL : 0, parse_error, err));
  if (U_FAILURE(err)) {
    return absl::InvalidArgumentError(absl::StrCat(where, " regex \"", std::string(source), "\" does not compile (", u_errorName(err),
                                                   " at offset ", parse_error.offset, ")"));
  }
  return std::unique_ptr<JsRegex>(new JsRegex(std::move(pattern), std::move(icu_pattern)));
}

JsRegex::JsRegex(std::unique_ptr<icu::RegexPattern> pattern, std::string icu_pattern)
    : pattern_(std::move(pattern)), icu_pattern_(std::move(icu_pattern)) {}

JsRegex::~JsRegex() = default;

std::vector<std::string> JsRegex::SplitIsolated(std::string_view text) const { return Split(text, true); }

std::vector<std::string> JsRegex::Matches(std::string_view text) const { return Split(text, false); }

std::vector<std::string> JsRegex::Split(std::string_view text_utf8, bool keep_gaps) const {
  std::vector<std::string> out;
  const icu::UnicodeString text = icu::UnicodeString::fromUTF8(icu::StringPiece(text_utf8.data(), text_utf8.size()));
  UErrorCode err = U_ZERO_ERROR;
  std::unique_ptr<icu::RegexMatcher> m(pattern_->matcher(text, err));
  if (U_FAILURE(err)) return {std::string(text_utf8)};
  m->setStackLimit(0, err);  // no backtracking limit: long runs ("\s+(?!\S)" over 1 MB) must not fail
  auto emit = [&](int32_t begin, int32_t end) {
    std::string s;
    text.tempSubStringBetween(begin, end).toUTF8String(s);
    out.push_back(std::move(s));
  };
  int32_t prev = 0;
  // Like String.matchAll with "gu": after an empty match the search moves on by one code point.
  while (m->find(err) && U_SUCCESS(err)) {
    const int32_t begin = m->start(err), end = m->end(err);
    if (keep_gaps && prev < begin) emit(prev, begin);
    if (end > begin) emit(begin, end);
    prev = end;
  }
  if (keep_gaps && prev < text.length()) emit(prev, text.length());
  return out;
}

}  // namespace brickserve
