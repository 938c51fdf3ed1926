#include "bricks/lora/lora_brick.h"

#include <charconv>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "bricks/core_guard/core_guard.h"
#include "bricks/lora/peft_config.h"
#include "engine/model/safetensors.h"
#include "engine/util/read_file.h"
#include "engine/util/status_macros.h"

namespace brickserve {

namespace {

constexpr char kPrefix[] = "base_model.model.";

std::string Shape(int64_t rows, int64_t cols) { return absl::StrCat("[", rows, ", ", cols, "]"); }

// "model.layers.3.self_attn.q_proj.lora_A.weight" -> layer 3, q_proj, 'A'.
struct ParsedName {
  int layer = -1;
  LoraTarget target = LoraTarget::kQ;
  char a_or_b = 'A';
};

absl::StatusOr<ParsedName> ParseTensorName(const std::string& full, const std::string& file) {
  const auto unsupported = [&](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": tensor \"", full, "\" ", why));
  };
  absl::string_view name = full;
  if (absl::StartsWith(name, kPrefix)) name.remove_prefix(sizeof(kPrefix) - 1);
  if (absl::StrContains(name, "lora_magnitude_vector")) return unsupported("is a DoRA magnitude: DoRA is not supported");
  const std::vector<absl::string_view> parts = absl::StrSplit(name, '.');
  // model . layers . N . self_attn|mlp . target . lora_A|lora_B . weight
  if (parts.size() != 7 || parts[0] != "model" || parts[1] != "layers" || parts[6] != "weight" ||
      (parts[5] != "lora_A" && parts[5] != "lora_B")) {
    return unsupported(
        "is not a LoRA matrix of a decoder layer projection (q/k/v/o_proj, gate/up/down_proj); lm_head, "
        "embeddings and other modules cannot be adapted by a LoRA brick");
  }
  ParsedName p;
  const auto [ptr, ec] = std::from_chars(parts[2].data(), parts[2].data() + parts[2].size(), p.layer);
  if (ec != std::errc() || ptr != parts[2].data() + parts[2].size() || p.layer < 0) {
    return unsupported("has no valid layer index");
  }
  const auto target = LoraTargetFromName(parts[4]);
  const bool attn = target && static_cast<int>(*target) <= static_cast<int>(LoraTarget::kO);
  if (!target || parts[3] != (attn ? "self_attn" : "mlp")) {
    return unsupported(absl::StrCat("targets \"", parts[3], ".", parts[4], "\", which is not a supported projection"));
  }
  p.target = *target;
  p.a_or_b = parts[5].back();
  return p;
}

// PEFT's B [out, rank] as [rank, out], in its own storage type: the device's expand step adds rank
// scaled rows of it (Device::AddLora).
template <typename T>
void Transpose(const T* src, int64_t rows, int64_t cols, T* dst) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) dst[c * rows + r] = src[r * cols + c];
  }
}

HostTensor Transposed(const HostTensor& b) {
  const int64_t out = b.shape[0], rank = b.shape[1];
  const size_t esize = DTypeSize(b.dtype);
  auto buf = std::make_shared<std::vector<std::byte>>(static_cast<size_t>(out * rank) * esize);
  // Copied as raw 2- or 4-byte elements: the values keep their storage type.
  if (esize == 2) {
    Transpose(static_cast<const uint16_t*>(b.data), out, rank, reinterpret_cast<uint16_t*>(buf->data()));
  } else {
    Transpose(static_cast<const uint32_t*>(b.data), out, rank, reinterpret_cast<uint32_t*>(buf->data()));
  }
  HostTensor t{b.dtype, {rank, out}, buf->data(), nullptr};
  t.keep_alive = std::shared_ptr<const void>(buf, buf->data());
  return t;
}

}  // namespace

std::string PeftLoraTensorName(int layer, LoraTarget t, char a_or_b) {
  return absl::StrCat(kPrefix, LoraTargetModule(layer, t), ".lora_", std::string(1, a_or_b), ".weight");
}

absl::StatusOr<std::shared_ptr<LoraBrick>> LoraBrick::Load(const std::string& dir, const BaseModel& base,
                                                           std::string sha256) {
  namespace fs = std::filesystem;
  const std::string config_path = (fs::path(dir) / "adapter_config.json").string();
  const std::string weights_path = (fs::path(dir) / "adapter_model.safetensors").string();
  if (!fs::exists(weights_path)) {
    if (fs::exists(fs::path(dir) / "adapter_model.bin")) {
      return absl::InvalidArgumentError(absl::StrCat(
          dir, "/adapter_model.bin is a PyTorch pickle, which brickserve does not load (unpickling runs code): "
               "save the adapter with safe_serialization=True to get adapter_model.safetensors"));
    }
    return absl::InvalidArgumentError(absl::StrCat(weights_path, " is missing"));
  }
  absl::StatusOr<std::string> config_text = ReadFileToString(config_path);
  // A brick directory that cannot be read is a bad argument to LoadBrick, not a missing brick.
  if (!config_text.ok()) return absl::InvalidArgumentError(config_text.status().message());
  BS_ASSIGN_OR_RETURN(PeftLoraConfig config, ParsePeftLoraConfig(*config_text, config_path));
  for (const std::string& t : config.target_modules) {
    const std::string last = t.substr(t.rfind('.') + 1);  // npos + 1 == 0: the whole name
    if (!LoraTargetFromName(last)) {
      return absl::InvalidArgumentError(absl::StrCat(config_path, ": target_modules contains \"", t,
                                                     "\"; a LoRA brick adapts q_proj, k_proj, v_proj, o_proj, "
                                                     "gate_proj, up_proj and down_proj only"));
    }
  }
  auto file = SafetensorsFile::Open(weights_path);
  if (!file.ok()) return absl::InvalidArgumentError(std::string(file.status().message()));

  auto brick = std::shared_ptr<LoraBrick>(new LoraBrick());
  brick->sha256_ = std::move(sha256);
  brick->version_ = brick->sha256_.substr(0, 12);
  brick->base_model_ = config.base_model_name_or_path;
  const ModelConfig& mc = base.config;
  LoraAdapter& adapter = brick->adapter_;
  adapter.id = NextLoraAdapterId();
  adapter.layers.resize(mc.num_layers);
  std::map<std::pair<int, int>, std::pair<const HostTensor*, const HostTensor*>> pairs;
  for (const auto& [name, tensor] : (*file)->tensors()) {
    BS_ASSIGN_OR_RETURN(ParsedName p, ParseTensorName(name, weights_path));
    if (p.layer >= mc.num_layers) {
      return absl::FailedPreconditionError(absl::StrCat("tensor \"", name, "\" adapts layers.", p.layer,
                                                        " but the base model has ", mc.num_layers, " layers"));
    }
    if (tensor.shape.size() != 2) {
      return absl::InvalidArgumentError(absl::StrCat(weights_path, ": tensor \"", name, "\" is ",
                                                     tensor.shape.size(), "-D; LoRA matrices are 2-D"));
    }
    auto& slot = pairs[{p.layer, static_cast<int>(p.target)}];
    (p.a_or_b == 'A' ? slot.first : slot.second) = &tensor;
  }
  if (pairs.empty()) return absl::InvalidArgumentError(absl::StrCat(weights_path, " holds no LoRA tensors"));
  std::set<int> targets;
  for (const auto& [key, ab] : pairs) {
    const auto [layer, ti] = key;
    const LoraTarget t = static_cast<LoraTarget>(ti);
    const std::string a_name = PeftLoraTensorName(layer, t, 'A'), b_name = PeftLoraTensorName(layer, t, 'B');
    if (ab.first == nullptr || ab.second == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(weights_path, ": \"", ab.first ? a_name : b_name,
                                                     "\" has no partner \"", ab.first ? b_name : a_name, "\""));
    }
    const std::string module = LoraTargetModule(layer, t);
    const int rank = config.RankFor(module);
    if (ab.first->shape[0] != rank) {
      return absl::FailedPreconditionError(absl::StrCat("tensor \"", a_name, "\" has rank ", ab.first->shape[0],
                                                        " but adapter_config.json says r = ", rank));
    }
    const float scale = static_cast<float>(config.ScaleFor(module));
    if (base.core_guard != nullptr) {
      BS_RETURN_IF_ERROR(base.core_guard->CheckLoraPair(layer, t, *ab.first, *ab.second, scale));
    }
    LoraPair& pair = adapter.layers[layer][ti];
    BS_ASSIGN_OR_RETURN(pair.a, base.device->UploadWeight(*ab.first));
    BS_ASSIGN_OR_RETURN(pair.b, base.device->UploadWeight(Transposed(*ab.second)));
    pair.scale = scale;
    adapter.bytes += DTypeSize(ab.first->dtype) * static_cast<size_t>(ab.first->shape[0] * ab.first->shape[1]) +
                     DTypeSize(ab.second->dtype) * static_cast<size_t>(ab.second->shape[0] * ab.second->shape[1]);
    targets.insert(ti);
  }
  for (int t : targets) brick->targets_.emplace_back(LoraTargetName(static_cast<LoraTarget>(t)));
  BS_RETURN_IF_ERROR(brick->Validate(mc));
  return brick;
}

absl::Status LoraBrick::Validate(const ModelConfig& base) const {
  if (static_cast<int>(adapter_.layers.size()) != base.num_layers) {
    return absl::FailedPreconditionError(absl::StrCat("the adapter has ", adapter_.layers.size(),
                                                      " layers but the base model has ", base.num_layers));
  }
  for (int l = 0; l < base.num_layers; ++l) {
    for (int ti = 0; ti < kNumLoraTargets; ++ti) {
      const LoraPair& p = adapter_.layers[l][ti];
      if (!p.present()) continue;
      const LoraTarget t = static_cast<LoraTarget>(ti);
      const auto [out, in] = LoraTargetShape(base, t);
      const int64_t rank = p.a.rows;
      if (p.a.cols != in) {
        return absl::FailedPreconditionError(absl::StrCat("tensor \"", PeftLoraTensorName(l, t, 'A'), "\" has shape ",
                                                          Shape(p.a.rows, p.a.cols), " but the base model needs ",
                                                          Shape(rank, in)));
      }
      // B is held transposed ([rank, out]); messages use PEFT's [out, rank].
      if (p.b.cols != out || p.b.rows != rank) {
        return absl::FailedPreconditionError(absl::StrCat("tensor \"", PeftLoraTensorName(l, t, 'B'), "\" has shape ",
                                                          Shape(p.b.cols, p.b.rows), " but the base model needs ",
                                                          Shape(out, rank)));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status LoraBrick::Apply(float weight, GenerationRequest& request) const {
  // Aliasing: the request's adapter pointer keeps this whole brick alive.
  request.loras.push_back({std::shared_ptr<const LoraAdapter>(shared_from_this(), &adapter_), weight});
  return absl::OkStatus();
}

}  // namespace brickserve
