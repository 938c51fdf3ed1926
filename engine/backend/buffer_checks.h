// Argument checks every backend makes the same way, so a bad call reads the same on any device.
#pragma once

#include <cstddef>
#include <span>

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

// SampleTokens' arguments: logits for every row, an id slot per row, penalty tokens in the vocabulary.
inline absl::Status CheckSampleTokens(const Buffer& logits, int vocab, std::span<const SampleRow> rows,
                                      std::span<const int32_t> ids) {
  if (absl::Status s = CheckSize(logits, rows.size() * vocab, "SampleTokens logits"); !s.ok()) return s;
  if (ids.size() < rows.size()) return absl::InvalidArgumentError("SampleTokens: fewer ids than rows");
  for (const SampleRow& r : rows) {
    for (const PenaltyToken& t : r.penalties) {
      if (t.id < 0 || t.id >= vocab) {
        return absl::OutOfRangeError(
            absl::StrCat("SampleTokens: penalty token ", t.id, " outside the vocabulary of ", vocab));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace brickserve
