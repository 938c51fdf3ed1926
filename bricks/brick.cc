#include "bricks/brick.h"

namespace brickserve {

absl::string_view BrickKindName(BrickKind kind) {
  switch (kind) {
    case BrickKind::kLora: return "lora";
  }
  return "unknown";
}

}  // namespace brickserve
