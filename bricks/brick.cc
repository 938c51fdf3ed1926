#include "bricks/brick.h"

#include "absl/strings/ascii.h"

namespace brickserve {

absl::string_view BrickKindName(BrickKind kind) {
  switch (kind) {
    case BrickKind::kLora: return "lora";
  }
  return "unknown";
}

bool IsValidBrickName(absl::string_view name) {
  if (name.empty() || name.size() > 128) return false;
  for (char ch : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(ch)) && ch != '.' && ch != '_' && ch != '-') return false;
  }
  return true;
}

}  // namespace brickserve
