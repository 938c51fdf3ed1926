// SHA-256 of brick files (OpenSSL): the content version of a brick and the check of an expected
// digest given to LoadBrick.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace brickserve {

// Lower-case hex SHA-256 of the file's bytes; NOT_FOUND / INVALID_ARGUMENT naming the path.
absl::StatusOr<std::string> Sha256OfFile(const std::string& path);

}  // namespace brickserve
