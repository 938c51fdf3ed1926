#include "engine/tokenizer/json_fields.h"

#include "absl/strings/str_cat.h"

namespace brickserve::json_fields {

using nlohmann::json;

std::string Path(const std::string& where, const std::string& key) {
  return absl::StrCat(where, !where.empty() && where.back() == ':' ? " " : ".", key);
}

std::string Path(const std::string& where, size_t index) { return absl::StrCat(where, "[", index, "]"); }

namespace {

// Short rendering of a value for messages (long arrays and objects are cut).
std::string Shown(const json& v) {
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  if (s.size() > 80) s = s.substr(0, 77) + "...";
  return s;
}

absl::Status WrongType(const std::string& where, const std::string& key, const json& v, const std::string& type) {
  return absl::InvalidArgumentError(absl::StrCat(Path(where, key), " must be ", type, ", got ", Shown(v)));
}

const json* Find(const json& obj, const std::string& key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  return it == obj.end() || it->is_null() ? nullptr : &*it;
}

}  // namespace

absl::StatusOr<std::string> OptString(const json& obj, const std::string& key, const std::string& where,
                                      std::string fallback) {
  const json* v = Find(obj, key);
  if (v == nullptr) return fallback;
  if (!v->is_string()) return WrongType(where, key, *v, "a string");
  return v->get<std::string>();
}

absl::StatusOr<bool> OptBool(const json& obj, const std::string& key, const std::string& where, bool fallback) {
  const json* v = Find(obj, key);
  if (v == nullptr) return fallback;
  if (!v->is_boolean()) return WrongType(where, key, *v, "true or false");
  return v->get<bool>();
}

absl::StatusOr<int64_t> OptInt(const json& obj, const std::string& key, const std::string& where, int64_t fallback) {
  const json* v = Find(obj, key);
  if (v == nullptr) return fallback;
  if (!v->is_number_integer()) return WrongType(where, key, *v, "an integer");
  return v->get<int64_t>();
}

absl::StatusOr<std::string> String(const json& obj, const std::string& key, const std::string& where) {
  const json* v = Find(obj, key);
  if (v == nullptr) return absl::InvalidArgumentError(absl::StrCat(Path(where, key), " is missing"));
  if (!v->is_string()) return WrongType(where, key, *v, "a string");
  return v->get<std::string>();
}

absl::StatusOr<const json*> Array(const json& obj, const std::string& key, const std::string& where) {
  const json* v = Find(obj, key);
  if (v == nullptr) return absl::InvalidArgumentError(absl::StrCat(Path(where, key), " is missing"));
  if (!v->is_array()) return WrongType(where, key, *v, "an array");
  return v;
}

absl::StatusOr<std::string> ReplaceStringPattern(const json& config, const std::string& where) {
  const json* pattern = Find(config, "pattern");
  if (pattern != nullptr && pattern->is_object() && pattern->contains("String") && (*pattern)["String"].is_string()) {
    std::string s = (*pattern)["String"].get<std::string>();
    if (!s.empty()) return s;
  }
  return Unsupported(where, "pattern", pattern ? *pattern : json(), "{\"String\": non-empty text}");
}

absl::Status Unsupported(const std::string& where, const std::string& key, const json& value, const std::string& supported) {
  return absl::InvalidArgumentError(
      absl::StrCat(Path(where, key), " ", Shown(value), " is not supported (supported: ", supported, ")"));
}

}  // namespace brickserve::json_fields
