#include "engine/model/core_map.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/model/safetensors.h"
#include "engine/util/read_file.h"
#include "engine/util/status_macros.h"
#include "nlohmann/json.hpp"

namespace brickserve {
namespace {

using nlohmann::json;

constexpr char kFormatName[] = "brickserve-core-map";

// Slice norms and super-weight values need a handful of elements of matrices that may be F16/BF16.
float F16ToF32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000 | (mant << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {  // subnormal: normalise
    exp = 113;
    while ((mant & 0x400) == 0) {
      mant <<= 1;
      --exp;
    }
    bits = sign | (exp << 23) | ((mant & 0x3ff) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

}  // namespace

float WidenedElement(const HostTensor& t, size_t i) {
  switch (t.dtype) {
    case DType::kF32: {
      float f;
      std::memcpy(&f, static_cast<const char*>(t.data) + 4 * i, 4);
      return f;
    }
    case DType::kF16: {
      uint16_t h;
      std::memcpy(&h, static_cast<const char*>(t.data) + 2 * i, 2);
      return F16ToF32(h);
    }
    case DType::kBF16: {
      uint16_t h;
      std::memcpy(&h, static_cast<const char*>(t.data) + 2 * i, 2);
      const uint32_t bits = static_cast<uint32_t>(h) << 16;
      float f;
      std::memcpy(&f, &bits, 4);
      return f;
    }
    case DType::kI32: break;
  }
  return 0;
}

namespace {

float Median(std::vector<float> v) {
  if (v.empty()) return 0;
  auto mid = v.begin() + v.size() / 2;
  std::nth_element(v.begin(), mid, v.end());
  return *mid;
}

size_t ArgMax(const std::vector<float>& v) {
  return static_cast<size_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

std::string WeightName(int layer, LoraTarget t) {
  return LoraTargetModule(layer, t) + ".weight";
}

// --- JSON reading: every field checked, the file and field named in errors -------------------------

class Reader {
 public:
  explicit Reader(const std::string& source) : source_(source) {}
  absl::Status Error(const std::string& field, const std::string& problem) const {
    return absl::InvalidArgumentError(absl::StrCat(source_, ": core map field \"", field, "\" ", problem));
  }
  absl::StatusOr<const json*> Field(const json& j, const std::string& name, const std::string& path) const {
    if (!j.is_object() || !j.contains(name)) return Error(path, "is missing");
    return &j[name];
  }
  absl::StatusOr<int64_t> Int(const json& j, const std::string& name, const std::string& path) const {
    BS_ASSIGN_OR_RETURN(const json* v, Field(j, name, path));
    if (!v->is_number_integer()) return Error(path, absl::StrCat("must be an integer, got ", v->dump()));
    return v->get<int64_t>();
  }
  absl::StatusOr<double> Number(const json& j, const std::string& name, const std::string& path) const {
    BS_ASSIGN_OR_RETURN(const json* v, Field(j, name, path));
    if (!v->is_number()) return Error(path, absl::StrCat("must be a number, got ", v->dump()));
    return v->get<double>();
  }
  absl::StatusOr<std::string> String(const json& j, const std::string& name, const std::string& path) const {
    BS_ASSIGN_OR_RETURN(const json* v, Field(j, name, path));
    if (!v->is_string()) return Error(path, absl::StrCat("must be a string, got ", v->dump()));
    return v->get<std::string>();
  }
  absl::StatusOr<const json*> Array(const json& j, const std::string& name, const std::string& path) const {
    BS_ASSIGN_OR_RETURN(const json* v, Field(j, name, path));
    if (!v->is_array()) return Error(path, "must be a list");
    return v;
  }

 private:
  const std::string& source_;
};

json DimToJson(const MassiveDim& d) {
  return {{"dim", d.dim}, {"first_layer", d.first_layer}, {"max_abs", d.max_abs}, {"ratio", d.ratio}};
}

absl::StatusOr<MassiveDim> DimFromJson(const Reader& r, const json& j, const std::string& path) {
  MassiveDim d;
  BS_ASSIGN_OR_RETURN(int64_t dim, r.Int(j, "dim", path + ".dim"));
  BS_ASSIGN_OR_RETURN(int64_t layer, r.Int(j, "first_layer", path + ".first_layer"));
  BS_ASSIGN_OR_RETURN(double max_abs, r.Number(j, "max_abs", path + ".max_abs"));
  BS_ASSIGN_OR_RETURN(double ratio, r.Number(j, "ratio", path + ".ratio"));
  d.dim = static_cast<int>(dim);
  d.first_layer = static_cast<int>(layer);
  d.max_abs = static_cast<float>(max_abs);
  d.ratio = static_cast<float>(ratio);
  return d;
}

}  // namespace

absl::Status CoreMap::CheckMatches(const ModelIdentity& m) const {
  if (model == m) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("the core map was computed for another model (", model.ToString(), ") than the one loaded (",
                   m.ToString(), "): recompute it with `brickserve core-map`"));
}

std::string CoreMap::Summary() const {
  std::string s = absl::StrFormat("%d massive dim(s) at >= %gx the median of per-dim maxima over %d calibration tokens",
                                  dims.size(), ratio_threshold, calibration_tokens);
  for (const auto& d : dims) {
    absl::StrAppendFormat(&s, "\n  dim %d: from layer %d, max |value| %.4g, %.1fx the median", d.dim, d.first_layer,
                          d.max_abs, d.ratio);
  }
  if (dims.empty()) {
    absl::StrAppendFormat(&s, "\n  strongest: dim %d, %.1fx the median at layer %d (max |value| %.4g)", strongest.dim,
                          strongest.ratio, strongest.first_layer, strongest.max_abs);
  }
  for (const auto& w : super_weights) {
    absl::StrAppendFormat(&s,
                          "\n  super weight: layers.%d.mlp.down_proj[%d, %d] = %.4g (input spike %.4g, output %.4g)",
                          w.layer, w.row, w.col, w.value, w.input_max, w.output_max);
  }
  return s;
}

std::string CoreMapToJson(const CoreMap& m) {
  json j;
  j["format"] = kFormatName;
  j["version"] = kCoreMapFormatVersion;
  j["model"] = {{"architecture", m.model.architecture}, {"hidden_size", m.model.hidden_size},
                {"intermediate_size", m.model.intermediate_size}, {"num_layers", m.model.num_layers},
                {"fingerprint", m.model.fingerprint}};
  j["ratio_threshold"] = m.ratio_threshold;
  j["calibration_tokens"] = m.calibration_tokens;
  j["dims"] = json::array();
  for (const auto& d : m.dims) j["dims"].push_back(DimToJson(d));
  j["strongest"] = DimToJson(m.strongest);
  j["super_weights"] = json::array();
  for (const auto& w : m.super_weights) {
    j["super_weights"].push_back({{"layer", w.layer}, {"row", w.row}, {"col", w.col}, {"value", w.value},
                                  {"input_max", w.input_max}, {"output_max", w.output_max}});
  }
  json norms = json::object();
  for (int t = 0; t < kNumLoraTargets; ++t) {
    json per_layer = json::array();
    for (const auto& layer : m.base_norms) per_layer.push_back(layer[t]);
    norms[std::string(LoraTargetName(static_cast<LoraTarget>(t)))] = std::move(per_layer);
  }
  j["base_norms"] = std::move(norms);
  return j.dump(1);
}

absl::StatusOr<CoreMap> CoreMapFromJson(absl::string_view text, const std::string& source) {
  const json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not a JSON object (a core map is written by "
                                                           "`brickserve core-map`)"));
  }
  const Reader r(source);
  BS_ASSIGN_OR_RETURN(std::string format, r.String(j, "format", "format"));
  BS_ASSIGN_OR_RETURN(int64_t version, r.Int(j, "version", "version"));
  if (format != kFormatName || version != kCoreMapFormatVersion) {
    return r.Error("version", absl::StrCat("is ", format, " version ", version, "; this brickserve reads ", kFormatName,
                                           " version ", kCoreMapFormatVersion, ": recompute the map"));
  }
  CoreMap m;
  BS_ASSIGN_OR_RETURN(const json* model, r.Field(j, "model", "model"));
  BS_ASSIGN_OR_RETURN(m.model.architecture, r.String(*model, "architecture", "model.architecture"));
  BS_ASSIGN_OR_RETURN(int64_t hidden, r.Int(*model, "hidden_size", "model.hidden_size"));
  BS_ASSIGN_OR_RETURN(int64_t inter, r.Int(*model, "intermediate_size", "model.intermediate_size"));
  BS_ASSIGN_OR_RETURN(int64_t layers, r.Int(*model, "num_layers", "model.num_layers"));
  BS_ASSIGN_OR_RETURN(m.model.fingerprint, r.String(*model, "fingerprint", "model.fingerprint"));
  if (hidden <= 0 || inter <= 0 || layers <= 0 || layers > (1 << 16)) {
    return r.Error("model", "has a non-positive or absurd size");
  }
  m.model.hidden_size = static_cast<int>(hidden);
  m.model.intermediate_size = static_cast<int>(inter);
  m.model.num_layers = static_cast<int>(layers);
  BS_ASSIGN_OR_RETURN(m.ratio_threshold, r.Number(j, "ratio_threshold", "ratio_threshold"));
  BS_ASSIGN_OR_RETURN(m.calibration_tokens, r.Int(j, "calibration_tokens", "calibration_tokens"));

  BS_ASSIGN_OR_RETURN(const json* dims, r.Array(j, "dims", "dims"));
  for (size_t i = 0; i < dims->size(); ++i) {
    const std::string path = absl::StrCat("dims[", i, "]");
    BS_ASSIGN_OR_RETURN(MassiveDim d, DimFromJson(r, (*dims)[i], path));
    if (d.dim < 0 || d.dim >= hidden || d.first_layer < 0 || d.first_layer >= layers) {
      return r.Error(path, absl::StrCat("is outside the model (dim ", d.dim, ", layer ", d.first_layer, ")"));
    }
    m.dims.push_back(d);
  }
  BS_ASSIGN_OR_RETURN(const json* strongest, r.Field(j, "strongest", "strongest"));
  BS_ASSIGN_OR_RETURN(m.strongest, DimFromJson(r, *strongest, "strongest"));

  BS_ASSIGN_OR_RETURN(const json* sws, r.Array(j, "super_weights", "super_weights"));
  for (size_t i = 0; i < sws->size(); ++i) {
    const std::string path = absl::StrCat("super_weights[", i, "]");
    const json& w = (*sws)[i];
    SuperWeight s;
    BS_ASSIGN_OR_RETURN(int64_t layer, r.Int(w, "layer", path + ".layer"));
    BS_ASSIGN_OR_RETURN(int64_t row, r.Int(w, "row", path + ".row"));
    BS_ASSIGN_OR_RETURN(int64_t col, r.Int(w, "col", path + ".col"));
    BS_ASSIGN_OR_RETURN(double value, r.Number(w, "value", path + ".value"));
    BS_ASSIGN_OR_RETURN(double in_max, r.Number(w, "input_max", path + ".input_max"));
    BS_ASSIGN_OR_RETURN(double out_max, r.Number(w, "output_max", path + ".output_max"));
    if (layer < 0 || layer >= layers || row < 0 || row >= hidden || col < 0 || col >= inter) {
      return r.Error(path, "is outside the model");
    }
    s.layer = static_cast<int>(layer);
    s.row = static_cast<int>(row);
    s.col = static_cast<int>(col);
    s.value = static_cast<float>(value);
    s.input_max = static_cast<float>(in_max);
    s.output_max = static_cast<float>(out_max);
    m.super_weights.push_back(s);
  }

  BS_ASSIGN_OR_RETURN(const json* norms, r.Field(j, "base_norms", "base_norms"));
  m.base_norms.resize(static_cast<size_t>(layers));
  for (int t = 0; t < kNumLoraTargets; ++t) {
    const std::string name(LoraTargetName(static_cast<LoraTarget>(t)));
    const std::string path = "base_norms." + name;
    BS_ASSIGN_OR_RETURN(const json* per_layer, r.Array(*norms, name, path));
    if (static_cast<int64_t>(per_layer->size()) != layers) {
      return r.Error(path, absl::StrCat("has ", per_layer->size(), " layers, not ", layers));
    }
    for (int64_t l = 0; l < layers; ++l) {
      const json& v = (*per_layer)[l];
      if (!v.is_array() || v.size() != m.dims.size()) {
        return r.Error(absl::StrCat(path, "[", l, "]"),
                       absl::StrCat("must list one norm per dim (", m.dims.size(), ")"));
      }
      for (const json& x : v) {
        if (!x.is_number() || !(x.get<double>() >= 0)) {
          return r.Error(absl::StrCat(path, "[", l, "]"), absl::StrCat("holds ", x.dump(), ", not a norm"));
        }
        m.base_norms[l][t].push_back(x.get<float>());
      }
    }
  }
  return m;
}

absl::Status WriteCoreMap(const CoreMap& map, const std::string& path) {
  // Write beside, then rename: a reader never sees half a map.
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write ", tmp));
    out << CoreMapToJson(map) << "\n";
    if (!out.flush()) return absl::InternalError(absl::StrCat("writing ", tmp, " failed"));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot rename ", tmp, " to ", path, ": ", ec.message()));
  return absl::OkStatus();
}

absl::StatusOr<CoreMap> ReadCoreMap(const std::string& path) {
  BS_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  return CoreMapFromJson(text, path);
}

absl::StatusOr<CoreMap> ReadCoreMapFor(const std::string& path, const std::string& model_dir,
                                       const ModelConfig& config) {
  BS_ASSIGN_OR_RETURN(CoreMap map, ReadCoreMap(path));
  BS_ASSIGN_OR_RETURN(ModelIdentity id, ComputeModelIdentity(model_dir, config));
  absl::Status st = map.CheckMatches(id);
  if (!st.ok()) return absl::FailedPreconditionError(absl::StrCat(path, ": ", st.message()));
  return map;
}

// --- computation ---------------------------------------------------------------------------------

CoreMapRecorder::CoreMapRecorder(const ModelConfig& config)
    : config_(config),
      residual_max_(config.num_layers, std::vector<float>(config.hidden_size, 0.0f)),
      down_in_max_(config.num_layers, std::vector<float>(config.intermediate_size, 0.0f)),
      down_out_max_(config.num_layers, std::vector<float>(config.hidden_size, 0.0f)) {}

void CoreMapRecorder::Observe(int layer, ProbePoint point, std::span<const float> values) {
  if (layer < 0 || layer >= config_.num_layers) return;
  if (point != ProbePoint::kResidual && point != ProbePoint::kDownInput && point != ProbePoint::kDownOutput) return;
  std::vector<float>& max = point == ProbePoint::kResidual    ? residual_max_[layer]
                            : point == ProbePoint::kDownInput ? down_in_max_[layer]
                                                              : down_out_max_[layer];
  const size_t width = max.size();
  for (size_t off = 0; off + width <= values.size(); off += width) {
    for (size_t c = 0; c < width; ++c) max[c] = std::max(max[c], std::fabs(values[off + c]));
  }
}

absl::StatusOr<CoreMap> CoreMapRecorder::Finish(const std::string& model_dir, const CoreMapOptions& options) const {
  if (!(options.ratio > 1)) {
    return absl::InvalidArgumentError(absl::StrCat("core map ratio must be > 1, got ", options.ratio));
  }
  if (tokens_ == 0) return absl::InvalidArgumentError("core map: no calibration tokens were run");
  CoreMap m;
  BS_ASSIGN_OR_RETURN(m.model, ComputeModelIdentity(model_dir, config_));
  m.ratio_threshold = options.ratio;
  m.calibration_tokens = tokens_;
  const int H = config_.hidden_size, L = config_.num_layers;

  std::vector<MassiveDim> per_dim(H);
  std::vector<bool> massive(H, false);
  for (int d = 0; d < H; ++d) per_dim[d].dim = d;
  float best_ratio = -1;
  for (int l = 0; l < L; ++l) {
    const float median = Median(residual_max_[l]);
    if (!(median > 0)) continue;  // a dead layer output says nothing about ratios
    for (int d = 0; d < H; ++d) {
      const float v = residual_max_[l][d], ratio = v / median;
      MassiveDim& md = per_dim[d];
      md.max_abs = std::max(md.max_abs, v);
      if (ratio >= options.ratio && !massive[d]) {
        massive[d] = true;
        md.first_layer = l;
      }
      md.ratio = std::max(md.ratio, ratio);
      if (ratio > best_ratio) {
        best_ratio = ratio;
        m.strongest = {d, l, v, ratio};
      }
    }
  }
  for (int d = 0; d < H; ++d) {
    if (massive[d]) m.dims.push_back(per_dim[d]);
  }
  if (best_ratio >= 0) m.strongest.max_abs = per_dim[m.strongest.dim].max_abs;

  BS_ASSIGN_OR_RETURN(CheckpointTensors ckpt, CheckpointTensors::Open(model_dir));
  if (options.super_weights) {
    for (int l = 0; l < L; ++l) {
      const auto& in = down_in_max_[l];
      const auto& out = down_out_max_[l];
      const size_t j = ArgMax(in);
      const float in_med = Median(in), out_med = Median(out);
      if (!(in_med > 0 && out_med > 0) || in[j] < options.ratio * in_med) continue;
      // One input spike may feed several output channels (Llama-3-8B: three rows of one column).
      for (size_t i = 0; i < out.size(); ++i) {
        if (out[i] < options.ratio * out_med) continue;
        BS_ASSIGN_OR_RETURN(HostTensor down, ckpt.Get(WeightName(l, LoraTarget::kDown)));
        SuperWeight w{l, static_cast<int>(i), static_cast<int>(j), 0, in[j], out[i]};
        w.value = WidenedElement(down, i * static_cast<size_t>(config_.intermediate_size) + j);
        m.super_weights.push_back(w);
      }
    }
  }

  // Base slice norms for the guard. Only the protected dims are read, so a map without dims costs nothing.
  m.base_norms.resize(L);
  for (int l = 0; l < L && !m.dims.empty(); ++l) {
    for (int ti = 0; ti < kNumLoraTargets; ++ti) {
      const LoraTarget t = static_cast<LoraTarget>(ti);
      BS_ASSIGN_OR_RETURN(HostTensor w, ckpt.Get(WeightName(l, t)));
      const auto [rows, cols] = LoraTargetShape(config_, t);
      if (w.shape != std::vector<int64_t>{rows, cols}) {
        return absl::InvalidArgumentError(absl::StrCat("core map: ", WeightName(l, t), " is not [", rows, ", ", cols,
                                                       "] as config.json implies"));
      }
      for (const MassiveDim& d : m.dims) {
        double sum = 0;
        if (CoreSliceIsRow(t)) {
          for (int64_t c = 0; c < cols; ++c) {
            const double x = WidenedElement(w, static_cast<size_t>(d.dim * cols + c));
            sum += x * x;
          }
        } else {
          for (int64_t r = 0; r < rows; ++r) {
            const double x = WidenedElement(w, static_cast<size_t>(r * cols + d.dim));
            sum += x * x;
          }
        }
        m.base_norms[l][ti].push_back(static_cast<float>(std::sqrt(sum)));
      }
    }
  }
  return m;
}

}  // namespace brickserve
