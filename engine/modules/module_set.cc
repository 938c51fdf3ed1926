#include "engine/modules/module_set.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/model/safetensors.h"
#include "engine/util/status_macros.h"
#include "nlohmann/json.hpp"

namespace brickserve {
namespace {

using nlohmann::json;

std::string LayerTensor(int l, const char* what) { return absl::StrCat("layers.", l, ".", what); }

HostTensor View(DType dtype, std::vector<int64_t> shape, const void* data) {
  return HostTensor{dtype, std::move(shape), data, nullptr};
}

// Copies tensor `name` of `file` into `out`, checking dtype and shape.
template <typename T>
absl::Status ReadTensor(const SafetensorsFile& file, const std::string& name, DType dtype,
                        const std::vector<int64_t>& shape, std::vector<T>* out) {
  auto it = file.tensors().find(name);
  if (it == file.tensors().end()) {
    return absl::InvalidArgumentError(absl::StrCat(file.path(), ": tensor \"", name, "\" is missing"));
  }
  const HostTensor& t = it->second;
  if (t.dtype != dtype || t.shape != shape) {
    return absl::InvalidArgumentError(absl::StrCat(file.path(), ": tensor \"", name, "\" is ", DTypeName(t.dtype), " [",
                                                   absl::StrJoin(t.shape, ", "), "], expected ", DTypeName(dtype),
                                                   " [", absl::StrJoin(shape, ", "), "]"));
  }
  size_t n = 1;
  for (int64_t d : shape) n *= static_cast<size_t>(d);
  const T* p = static_cast<const T*>(t.data);
  out->assign(p, p + n);
  return absl::OkStatus();
}

absl::StatusOr<ModuleSet> ParseMetadata(const SafetensorsFile& file) {
  const std::string& path = file.path();
  auto it = file.metadata().find(kModuleSetMetadataKey);
  if (it == file.metadata().end()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": no \"", kModuleSetMetadataKey,
                                                   "\" metadata (a module set is written by `brickserve modules build`)"));
  }
  const json j = json::parse(it->second, nullptr, /*allow_exceptions=*/false);
  auto bad = [&](const std::string& field, const std::string& problem) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": module set field \"", field, "\" ", problem));
  };
  if (j.is_discarded() || !j.is_object()) return bad(kModuleSetMetadataKey, "is not a JSON object");
  auto integer = [&](const json& o, const char* name, const std::string& field) -> absl::StatusOr<int64_t> {
    if (!o.contains(name) || !o[name].is_number_integer()) return bad(field, "is missing or not an integer");
    return o[name].get<int64_t>();
  };
  auto string = [&](const json& o, const char* name, const std::string& field) -> absl::StatusOr<std::string> {
    if (!o.contains(name) || !o[name].is_string()) return bad(field, "is missing or not a string");
    return o[name].get<std::string>();
  };
  BS_ASSIGN_OR_RETURN(int64_t version, integer(j, "format_version", "format_version"));
  if (version != kModuleSetFormatVersion) {
    return bad("format_version", absl::StrCat("is ", version, "; this brickserve reads version ", kModuleSetFormatVersion,
                                              ": rebuild with `brickserve modules build`"));
  }
  if (!j.contains("model") || !j["model"].is_object()) return bad("model", "is missing");
  const json& m = j["model"];
  ModuleSet s;
  BS_ASSIGN_OR_RETURN(s.model.architecture, string(m, "architecture", "model.architecture"));
  BS_ASSIGN_OR_RETURN(int64_t mh, integer(m, "hidden_size", "model.hidden_size"));
  BS_ASSIGN_OR_RETURN(int64_t mi, integer(m, "intermediate_size", "model.intermediate_size"));
  BS_ASSIGN_OR_RETURN(int64_t ml, integer(m, "num_layers", "model.num_layers"));
  BS_ASSIGN_OR_RETURN(s.model.fingerprint, string(m, "fingerprint", "model.fingerprint"));
  BS_ASSIGN_OR_RETURN(int64_t n, integer(j, "num_modules", "num_modules"));
  BS_ASSIGN_OR_RETURN(int64_t size, integer(j, "module_size", "module_size"));
  if (mh <= 0 || mi <= 0 || ml <= 0 || mh > (1 << 20) || mi > (1 << 22) || ml > 4096) {
    return bad("model", "has a non-positive or absurd size");
  }
  if (n <= 0 || size <= 0 || n * size != mi) {
    return bad("num_modules", absl::StrCat("times module_size (", n, " x ", size, ") must equal intermediate_size ", mi));
  }
  s.model.hidden_size = s.hidden_size = static_cast<int>(mh);
  s.model.intermediate_size = s.intermediate_size = static_cast<int>(mi);
  s.model.num_layers = s.num_layers = static_cast<int>(ml);
  s.num_modules = static_cast<int>(n);
  s.module_size = static_cast<int>(size);
  BS_ASSIGN_OR_RETURN(s.clustering, string(j, "clustering", "clustering"));
  BS_ASSIGN_OR_RETURN(s.router, string(j, "router", "router"));
  BS_ASSIGN_OR_RETURN(s.calibration_tokens, integer(j, "calibration_tokens", "calibration_tokens"));
  if (!j.contains("threshold_densities") || !j["threshold_densities"].is_array()) {
    return bad("threshold_densities", "is missing or not a list");
  }
  for (const auto& d : j["threshold_densities"]) {
    if (!d.is_number()) return bad("threshold_densities", "must hold numbers");
    s.threshold_densities.push_back(d.get<float>());
  }
  if (j.contains("report")) s.report_json = j["report"].dump();
  return s;
}

}  // namespace

absl::Status ModuleSet::Validate() const {
  auto bad = [](const std::string& what) { return absl::InvalidArgumentError(absl::StrCat("module set: ", what)); };
  if (static_cast<int>(layers.size()) != num_layers) {
    return bad(absl::StrCat(layers.size(), " layers for num_layers ", num_layers));
  }
  if (num_modules <= 0 || module_size <= 0 || int64_t{num_modules} * module_size != intermediate_size) {
    return bad(absl::StrCat("num_modules x module_size (", num_modules, " x ", module_size,
                            ") must equal intermediate_size ", intermediate_size));
  }
  for (size_t g = 0; g < threshold_densities.size(); ++g) {
    const float d = threshold_densities[g];
    if (!(d > 0.0f && d <= 1.0f) || (g > 0 && d <= threshold_densities[g - 1])) {
      return bad("threshold_densities must be ascending values in (0, 1]");
    }
  }
  std::vector<uint8_t> seen(intermediate_size);
  for (int l = 0; l < num_layers; ++l) {
    const ModuleLayer& L = layers[l];
    if (L.modules.size() != static_cast<size_t>(intermediate_size) ||
        L.router_weight.size() != static_cast<size_t>(num_modules) * hidden_size ||
        L.router_bias.size() != static_cast<size_t>(num_modules) ||
        L.thresholds.size() != threshold_densities.size()) {
      return bad(absl::StrCat("layer ", l, ": a tensor has the wrong size"));
    }
    std::fill(seen.begin(), seen.end(), 0);
    for (int32_t id : L.modules) {
      if (id < 0 || id >= intermediate_size) {
        return bad(absl::StrCat(LayerTensor(l, "modules"), " holds neuron ", id, " outside [0, ", intermediate_size, ")"));
      }
      if (seen[id]++) return bad(absl::StrCat(LayerTensor(l, "modules"), " holds neuron ", id, " twice"));
    }
    for (size_t i = 0; i < L.resident.size(); ++i) {
      const int32_t id = L.resident[i];
      if (id < 0 || id >= intermediate_size || (i > 0 && id <= L.resident[i - 1])) {
        return bad(absl::StrCat(LayerTensor(l, "resident"), " must hold ascending neuron ids in [0, ",
                                intermediate_size, ")"));
      }
    }
    for (float v : L.router_weight) {
      if (!std::isfinite(v)) return bad(absl::StrCat(LayerTensor(l, "router.weight"), " holds a non-finite value"));
    }
  }
  return absl::OkStatus();
}

float ModuleSet::ThresholdFor(int layer, float density) const {
  const auto& d = threshold_densities;
  const auto& t = layers[layer].thresholds;
  if (d.empty()) return 0.0f;
  if (density <= d.front()) return t.front();
  if (density >= d.back()) return t.back();
  const size_t g = std::upper_bound(d.begin(), d.end(), density) - d.begin();  // d[g-1] <= density < d[g]
  const float f = (density - d[g - 1]) / (d[g] - d[g - 1]);
  return t[g - 1] + f * (t[g] - t[g - 1]);
}

absl::Status WriteModuleSet(const ModuleSet& set, const std::string& path) {
  BS_RETURN_IF_ERROR(set.Validate());
  const int64_t N = set.num_modules, S = set.module_size, H = set.hidden_size;
  std::map<std::string, HostTensor> tensors;
  for (int l = 0; l < set.num_layers; ++l) {
    const ModuleLayer& L = set.layers[l];
    tensors[LayerTensor(l, "modules")] = View(DType::kI32, {N, S}, L.modules.data());
    if (!L.resident.empty()) {
      tensors[LayerTensor(l, "resident")] =
          View(DType::kI32, {static_cast<int64_t>(L.resident.size())}, L.resident.data());
    }
    tensors[LayerTensor(l, "router.weight")] = View(DType::kF32, {N, H}, L.router_weight.data());
    tensors[LayerTensor(l, "router.bias")] = View(DType::kF32, {N}, L.router_bias.data());
    if (!L.thresholds.empty()) {
      tensors[LayerTensor(l, "thresholds")] =
          View(DType::kF32, {static_cast<int64_t>(L.thresholds.size())}, L.thresholds.data());
    }
  }
  json meta = {{"format_version", kModuleSetFormatVersion},
               {"model",
                {{"architecture", set.model.architecture},
                 {"hidden_size", set.model.hidden_size},
                 {"intermediate_size", set.model.intermediate_size},
                 {"num_layers", set.model.num_layers},
                 {"fingerprint", set.model.fingerprint}}},
               {"num_layers", set.num_layers},
               {"num_modules", set.num_modules},
               {"module_size", set.module_size},
               {"clustering", set.clustering},
               {"router", set.router},
               {"calibration_tokens", set.calibration_tokens},
               {"threshold_densities", set.threshold_densities},
               {"report", json::parse(set.report_json, nullptr, false)}};
  return WriteSafetensors(path, tensors, {{kModuleSetMetadataKey, meta.dump()}});
}

absl::StatusOr<std::shared_ptr<const ModuleSet>> ReadModuleSet(const std::string& path) {
  BS_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(path));
  BS_ASSIGN_OR_RETURN(ModuleSet s, ParseMetadata(*file));
  const int64_t N = s.num_modules, S = s.module_size, H = s.hidden_size;
  const int64_t G = static_cast<int64_t>(s.threshold_densities.size());
  s.layers.resize(s.num_layers);
  for (int l = 0; l < s.num_layers; ++l) {
    ModuleLayer& L = s.layers[l];
    BS_RETURN_IF_ERROR(ReadTensor(*file, LayerTensor(l, "modules"), DType::kI32, {N, S}, &L.modules));
    const std::string resident = LayerTensor(l, "resident");
    if (auto it = file->tensors().find(resident); it != file->tensors().end()) {
      const auto& shape = it->second.shape;
      if (shape.size() != 1) return absl::InvalidArgumentError(absl::StrCat(path, ": \"", resident, "\" must be 1-D"));
      BS_RETURN_IF_ERROR(ReadTensor(*file, resident, DType::kI32, shape, &L.resident));
    }
    BS_RETURN_IF_ERROR(ReadTensor(*file, LayerTensor(l, "router.weight"), DType::kF32, {N, H}, &L.router_weight));
    BS_RETURN_IF_ERROR(ReadTensor(*file, LayerTensor(l, "router.bias"), DType::kF32, {N}, &L.router_bias));
    if (G > 0) BS_RETURN_IF_ERROR(ReadTensor(*file, LayerTensor(l, "thresholds"), DType::kF32, {G}, &L.thresholds));
  }
  if (absl::Status st = s.Validate(); !st.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", st.message()));
  }
  return std::make_shared<const ModuleSet>(std::move(s));
}

absl::StatusOr<std::shared_ptr<const ModuleSet>> ReadModuleSetFor(const std::string& path,
                                                                  const std::string& model_dir,
                                                                  const ModelConfig& config) {
  BS_ASSIGN_OR_RETURN(auto set, ReadModuleSet(path));
  BS_ASSIGN_OR_RETURN(ModelIdentity model, ComputeModelIdentity(model_dir, config));
  if (!(set->model == model)) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, " was built for another model (", set->model.ToString(), ") than the one loaded (",
                     model.ToString(), "): rebuild it with `brickserve modules build`"));
  }
  return set;
}

}  // namespace brickserve
