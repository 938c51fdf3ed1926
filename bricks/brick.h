// The one interface every brick kind implements (LoRA today; knowledge, memory and compression
// bricks later). A brick is immutable once loaded; requests hold it by shared_ptr until they end,
// so unloading or replacing a brick never changes a request in flight.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/status.h"
#include "engine/backend/device.h"
#include "engine/generate/generation.h"
#include "engine/model/config.h"

namespace brickserve {

class CoreGuard;

enum class BrickKind { kLora };
absl::string_view BrickKindName(BrickKind kind);  // "lora"

// A brick name: 1 to 128 characters of [A-Za-z0-9._-] (what requests, the admin API, the config
// and a watched directory's subdirectories all use).
bool IsValidBrickName(absl::string_view name);

// The loaded base model, as bricks see it: what they are validated against and where they upload.
struct BaseModel {
  ModelConfig config;
  std::string model_dir;
  Device* device = nullptr;
  // When set, LoRA bricks whose deltas would move the model's core region are refused (not owned).
  const CoreGuard* core_guard = nullptr;
};

class Brick : public std::enable_shared_from_this<Brick> {
 public:
  virtual ~Brick() = default;
  virtual BrickKind kind() const = 0;
  // Content version: the first 12 hex digits of the SHA-256 of the brick's weights file.
  virtual const std::string& version() const = 0;
  // SHA-256 of the weights file, hex.
  virtual const std::string& sha256() const = 0;
  // Device memory the brick holds.
  virtual size_t size_bytes() const = 0;
  // The base model the brick says it was built for (informational; shapes are what is checked).
  virtual const std::string& base_model() const = 0;
  // Where it plugs into the base model, e.g. {"q_proj", "v_proj"} for a LoRA.
  virtual std::vector<std::string> plugs_into() const = 0;
  // Checks the brick against the loaded base model: FAILED_PRECONDITION naming what does not fit.
  virtual absl::Status Validate(const ModelConfig& base) const = 0;
  // Adds this brick, with `weight`, to a generation request (for a LoRA: one more adapter). The
  // request then keeps the brick alive until it ends.
  virtual absl::Status Apply(float weight, GenerationRequest& request) const = 0;
};

}  // namespace brickserve
