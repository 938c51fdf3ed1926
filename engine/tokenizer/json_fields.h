// Typed access to tokenizer.json / tokenizer_config.json fields. Errors name the file, the field
// path and the offending value, e.g. `tokenizer.json: model.type "WordPiece" is not supported`.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"

namespace brickserve::json_fields {

// `where` names an object: "tokenizer.json:" (the top level) or "tokenizer.json: model".
std::string Path(const std::string& where, const std::string& key);
std::string Path(const std::string& where, size_t index);

// The value of an optional field: absent and null give `fallback`; another type is an error.
absl::StatusOr<std::string> OptString(const nlohmann::json& obj, const std::string& key, const std::string& where,
                                      std::string fallback);
absl::StatusOr<bool> OptBool(const nlohmann::json& obj, const std::string& key, const std::string& where, bool fallback);
absl::StatusOr<int64_t> OptInt(const nlohmann::json& obj, const std::string& key, const std::string& where,
                               int64_t fallback);
// A required string field.
absl::StatusOr<std::string> String(const nlohmann::json& obj, const std::string& key, const std::string& where);
// A required array field (nullptr never returned on success).
absl::StatusOr<const nlohmann::json*> Array(const nlohmann::json& obj, const std::string& key, const std::string& where);

// The literal of a Replace step's {"String": s} pattern (normalizer or decoder); other patterns
// are refused.
absl::StatusOr<std::string> ReplaceStringPattern(const nlohmann::json& config, const std::string& where);

// `where.key "value" is not supported (supported: ...)`.
absl::Status Unsupported(const std::string& where, const std::string& key, const nlohmann::json& value,
                         const std::string& supported);

}  // namespace brickserve::json_fields
