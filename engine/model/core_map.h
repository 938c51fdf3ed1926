// The core map of a base model: the coordinates no brick may disturb (CONCEPTS.md §4). It holds the
// residual-stream dimensions that carry massive activations on calibration text, the down_proj super
// weights that feed them, and, so that a guard needs nothing else, the norms of the base weights'
// slices touching those dimensions. Computed by Engine::ComputeCoreMap (or `brickserve core-map`),
// saved as JSON next to the model, refused when loaded for another model.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/model/config.h"
#include "engine/model/model_identity.h"
#include "engine/model/llama_model.h"
#include "engine/model/lora.h"

namespace brickserve {

inline constexpr int kCoreMapFormatVersion = 1;

// Element i of an F32/F16/BF16 host tensor, widened to float (the map and the guard read a few
// elements of weights in any storage type).
float WidenedElement(const HostTensor& t, size_t i);

struct CoreMapOptions {
  // A residual dim is massive at a layer when its max |value| over the calibration tokens is at least
  // `ratio` × the median over all dims of that per-dim max. The literature's massive activations sit
  // ~10^3-10^4× above the median (Sun et al. 2024; measured there against the median value, which is
  // lower than our median of maxima); ordinary outlier dims reach ~5× (brick-tiny's strongest is 4.9×,
  // random models ~2×). 50 is well clear of both, so the map holds the real ones and nothing else.
  double ratio = 50.0;
  // Also look for down_proj super weights: at a layer where down_proj's input spikes (same ratio) in
  // channel j (the largest) and its output in channel i, W_down[i, j] is one (Yu et al. 2024).
  bool super_weights = true;
};

struct MassiveDim {
  int dim = 0;
  int first_layer = 0;  // the first layer whose output shows it
  float max_abs = 0;    // largest |value| over every layer's output and every calibration token
  float ratio = 0;      // the largest per-layer ratio of its max to that layer's median of per-dim maxima
};

struct SuperWeight {
  int layer = 0;
  int row = 0;         // output channel i of down_proj (a residual dim)
  int col = 0;         // input channel j (an MLP neuron)
  float value = 0;     // W_down[i, j] in the checkpoint
  float input_max = 0, output_max = 0;  // the spikes that marked it
};

struct CoreMap {
  ModelIdentity model;
  double ratio_threshold = 0;
  int64_t calibration_tokens = 0;
  std::vector<MassiveDim> dims;  // ascending dim
  std::vector<SuperWeight> super_weights;
  // The strongest residual dim even when under the threshold: what a map without dims came close to.
  MassiveDim strongest;
  // base_norms[layer][target][k]: L2 norm of the base weight's slice touching dims[k]: row dims[k] of
  // o_proj / down_proj (they write residual dim dims[k]), column dims[k] of q/k/v/gate/up_proj (they read it).
  std::vector<std::array<std::vector<float>, kNumLoraTargets>> base_norms;

  // FAILED_PRECONDITION naming both models when this map was computed for another one.
  absl::Status CheckMatches(const ModelIdentity& model) const;
  // One line per dim and super weight, for the CLI and logs.
  std::string Summary() const;
};

// Whether a LoRA target's base slice for a dim is a row (it writes the residual) or a column (reads it).
inline bool CoreSliceIsRow(LoraTarget t) { return t == LoraTarget::kO || t == LoraTarget::kDown; }

std::string CoreMapToJson(const CoreMap& map);
// `source` names the file in messages. INVALID_ARGUMENT for bad JSON, a missing field, or another
// format version.
absl::StatusOr<CoreMap> CoreMapFromJson(absl::string_view json, const std::string& source);
absl::Status WriteCoreMap(const CoreMap& map, const std::string& path);
absl::StatusOr<CoreMap> ReadCoreMap(const std::string& path);
// ReadCoreMap, then CheckMatches against the model in `model_dir`.
absl::StatusOr<CoreMap> ReadCoreMapFor(const std::string& path, const std::string& model_dir,
                                       const ModelConfig& config);

// Collects activation statistics from LlamaModel's probe over calibration passes, then builds the map.
class CoreMapRecorder {
 public:
  explicit CoreMapRecorder(const ModelConfig& config);
  // For LlamaModel::set_probe: [](int l, ProbePoint p, auto v) { recorder.Observe(l, p, v); }.
  void Observe(int layer, ProbePoint point, std::span<const float> values);
  void AddTokens(int64_t n) { tokens_ += n; }
  // Finds the dims and super weights, then reads the base norms and super-weight values from the
  // checkpoint in `model_dir`.
  absl::StatusOr<CoreMap> Finish(const std::string& model_dir, const CoreMapOptions& options) const;

 private:
  ModelConfig config_;
  int64_t tokens_ = 0;
  // Per layer, per channel max |value|.
  std::vector<std::vector<float>> residual_max_, down_in_max_, down_out_max_;
};

}  // namespace brickserve
