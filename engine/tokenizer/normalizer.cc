#include "engine/tokenizer/normalizer.h"

#include <unicode/normalizer2.h>
#include <unicode/unistr.h>

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "engine/tokenizer/json_fields.h"
#include "engine/util/status_macros.h"
#include "nlohmann/json.hpp"

namespace brickserve {
namespace {

using nlohmann::json;
namespace jf = json_fields;

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> steps) : steps_(std::move(steps)) {}
  std::string Normalize(std::string text) const override {
    for (const auto& s : steps_) text = s->Normalize(std::move(text));
    return text;
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  std::string Normalize(std::string text) const override { return prefix_ + text; }

 private:
  std::string prefix_;
};

class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(std::string from, std::string to) : from_(std::move(from)), to_(std::move(to)) {}
  std::string Normalize(std::string text) const override { return absl::StrReplaceAll(text, {{from_, to_}}); }

 private:
  std::string from_, to_;
};

// JavaScript's String.prototype.normalize, with ICU's tables.
class UnicodeNormalizer : public Normalizer {
 public:
  explicit UnicodeNormalizer(const icu::Normalizer2* normalizer) : normalizer_(normalizer) {}
  std::string Normalize(std::string text) const override {
    UErrorCode err = U_ZERO_ERROR;
    const icu::UnicodeString in = icu::UnicodeString::fromUTF8(text);
    // Most text is already normalized: skip the copy when the quick check says so.
    if (normalizer_->isNormalized(in, err) && U_SUCCESS(err)) return text;
    err = U_ZERO_ERROR;
    const icu::UnicodeString out = normalizer_->normalize(in, err);
    if (U_FAILURE(err)) return text;
    std::string s;
    return out.toUTF8String(s);
  }

 private:
  const icu::Normalizer2* normalizer_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Normalizer>> MakeNormalizer(const json& config, const std::string& where) {
  if (config.is_null()) return nullptr;
  if (!config.is_object()) return absl::InvalidArgumentError(absl::StrCat(where, " must be an object or null"));
  BS_ASSIGN_OR_RETURN(const std::string type, jf::String(config, "type", where));
  if (type == "Sequence") {
    BS_ASSIGN_OR_RETURN(const json* list, jf::Array(config, "normalizers", where));
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (size_t i = 0; i < list->size(); ++i) {
      BS_ASSIGN_OR_RETURN(auto step, MakeNormalizer((*list)[i], jf::Path(jf::Path(where, "normalizers"), i)));
      if (step) steps.push_back(std::move(step));
    }
    return std::make_unique<SequenceNormalizer>(std::move(steps));
  }
  if (type == "Prepend") {
    BS_ASSIGN_OR_RETURN(std::string prefix, jf::String(config, "prepend", where));
    return std::make_unique<PrependNormalizer>(std::move(prefix));
  }
  if (type == "Replace") {
    BS_ASSIGN_OR_RETURN(std::string from, jf::ReplaceStringPattern(config, where));
    BS_ASSIGN_OR_RETURN(std::string to, jf::String(config, "content", where));
    // transformers.js replaces with String.replaceAll, where "$" starts a substitution pattern.
    if (to.find('$') != std::string::npos) return jf::Unsupported(where, "content", to, "text without \"$\"");
    return std::make_unique<ReplaceNormalizer>(std::move(from), std::move(to));
  }
  UErrorCode err = U_ZERO_ERROR;
  const icu::Normalizer2* n = nullptr;
  if (type == "NFC") n = icu::Normalizer2::getNFCInstance(err);
  if (type == "NFD") n = icu::Normalizer2::getNFDInstance(err);
  if (type == "NFKC") n = icu::Normalizer2::getNFKCInstance(err);
  if (type == "NFKD") n = icu::Normalizer2::getNFKDInstance(err);
  if (n != nullptr) {
    if (U_FAILURE(err)) return absl::InternalError(absl::StrCat("ICU ", type, " normalizer: ", u_errorName(err)));
    return std::make_unique<UnicodeNormalizer>(n);
  }
  return jf::Unsupported(where, "type", type, "Sequence, Prepend, Replace, NFC, NFD, NFKC, NFKD");
}

}  // namespace brickserve
