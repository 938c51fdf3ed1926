// Argument checks every backend makes the same way, so a bad call reads the same on any device.
#pragma once

#include <cstddef>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/backend/device.h"

namespace brickserve {

// INVALID_ARGUMENT naming the op when `b` holds fewer than `need` floats.
inline absl::Status CheckSize(const Buffer& b, size_t need, const char* what) {
  if (b.size < need) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": buffer holds ", b.size, " floats, op needs ", need));
  }
  return absl::OkStatus();
}

}  // namespace brickserve
