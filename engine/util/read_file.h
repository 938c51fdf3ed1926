// The whole of a small file (configs, JSON metadata, tokens) as a string.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace brickserve {

// NOT_FOUND "cannot read PATH" when the file cannot be opened.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);

}  // namespace brickserve
