// Reads a brick from disk, whatever its kind: the kind is recognised by the files in the directory.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "bricks/brick.h"

namespace brickserve {

// Loads the brick at `path` and validates it against `base`. NOT_FOUND when the path does not
// exist; INVALID_ARGUMENT when no brick kind recognises it.
absl::StatusOr<std::shared_ptr<Brick>> LoadBrickFromPath(const std::string& path, const BaseModel& base);

}  // namespace brickserve
