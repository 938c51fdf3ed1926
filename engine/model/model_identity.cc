#include "engine/model/model_identity.h"

#include <filesystem>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/model/safetensors.h"
#include "engine/util/read_file.h"
#include "engine/util/status_macros.h"

namespace brickserve {
namespace {

uint64_t Fnv1a(uint64_t h, const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace

std::string ModelIdentity::ToString() const {
  return absl::StrCat(architecture, ", hidden ", hidden_size, ", intermediate ", intermediate_size, ", ", num_layers,
                      " layers, fingerprint ", fingerprint);
}

absl::StatusOr<ModelIdentity> ComputeModelIdentity(const std::string& model_dir, const ModelConfig& config) {
  namespace fs = std::filesystem;
  ModelIdentity id;
  id.architecture = config.architecture_name;
  id.hidden_size = config.hidden_size;
  id.intermediate_size = config.intermediate_size;
  id.num_layers = config.num_layers;
  BS_ASSIGN_OR_RETURN(std::string config_text, ReadFileToString((fs::path(model_dir) / "config.json").string()));
  uint64_t h = Fnv1a(14695981039346656037ull, config_text.data(), config_text.size());
  BS_ASSIGN_OR_RETURN(CheckpointTensors ckpt, CheckpointTensors::Open(model_dir));
  std::vector<std::string> names = {"model.norm.weight"};
  for (int l = 0; l < config.num_layers; ++l) {
    names.push_back(absl::StrCat("model.layers.", l, ".input_layernorm.weight"));
    names.push_back(absl::StrCat("model.layers.", l, ".post_attention_layernorm.weight"));
  }
  for (const std::string& name : names) {
    BS_ASSIGN_OR_RETURN(HostTensor t, ckpt.Get(name));
    size_t n = DTypeSize(t.dtype);
    for (int64_t s : t.shape) n *= static_cast<size_t>(s);
    h = Fnv1a(h, t.data, n);
  }
  id.fingerprint = absl::StrFormat("%016x", h);
  return id;
}

}  // namespace brickserve
