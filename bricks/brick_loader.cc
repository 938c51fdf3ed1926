#include "bricks/brick_loader.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "bricks/digest.h"
#include "bricks/lora/lora_brick.h"
#include "engine/util/status_macros.h"

namespace brickserve {

absl::StatusOr<std::shared_ptr<Brick>> LoadBrickFromPath(const std::string& path, const BaseModel& base) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(path, ec)) return absl::NotFoundError(absl::StrCat("brick path ", path, " does not exist"));
  if (!fs::is_directory(path, ec)) {
    return absl::InvalidArgumentError(absl::StrCat("brick path ", path, " is not a directory"));
  }
  if (fs::exists(fs::path(path) / "adapter_config.json", ec)) {
    const fs::path weights = fs::path(path) / "adapter_model.safetensors";
    std::string sha256;
    if (fs::exists(weights, ec)) {
      BS_ASSIGN_OR_RETURN(sha256, Sha256OfFile(weights.string()));
    }
    BS_ASSIGN_OR_RETURN(std::shared_ptr<LoraBrick> lora, LoraBrick::Load(path, base, std::move(sha256)));
    return std::shared_ptr<Brick>(std::move(lora));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("brick path ", path, " holds no known brick: a LoRA brick is a PEFT adapter directory "
                                        "(adapter_config.json + adapter_model.safetensors)"));
}

}  // namespace brickserve
