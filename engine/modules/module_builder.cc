#include "engine/modules/module_builder.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "engine/model/safetensors.h"
#include "engine/modules/balanced_kmeans.h"
#include "engine/modules/router_fit.h"
#include "engine/util/status_macros.h"
#include "nlohmann/json.hpp"

namespace brickserve {
namespace {

// Per layer, what the calibration pass recorded.
struct LayerActivations {
  std::vector<float> x;        // FFN inputs [T, H]
  std::vector<float> h;        // silu(gate)·up [T, I]
  std::vector<float> gate_abs;  // |silu(gate)| of a sample of tokens, for the thresholds
};

// The rows of a [rows, width] matrix whose index is (or is not) a multiple of `every`.
std::vector<float> SplitRows(const std::vector<float>& m, size_t width, int every, bool holdout) {
  std::vector<float> out;
  const size_t rows = m.size() / width;
  for (size_t r = 0; r < rows; ++r) {
    if ((r % every == 0) == holdout) out.insert(out.end(), m.begin() + r * width, m.begin() + (r + 1) * width);
  }
  return out;
}

// Each module's share of the token's total |activation| [T, N].
std::vector<float> ModuleMass(const std::vector<float>& h, int I, const std::vector<int32_t>& owner, int N) {
  const size_t T = h.size() / I;
  std::vector<float> mass(T * N, 0.0f);
  for (size_t t = 0; t < T; ++t) {
    const float* hr = h.data() + t * I;
    float* mr = mass.data() + t * N;
    double total = 0;
    for (int j = 0; j < I; ++j) {
      mr[owner[j]] += std::fabs(hr[j]);
      total += std::fabs(hr[j]);
    }
    if (total > 0) {
      for (int m = 0; m < N; ++m) mr[m] = static_cast<float>(mr[m] / total);
    }
  }
  return mass;
}

std::vector<float> RouterScores(const LinearRouter& r, const std::vector<float>& x, int H) {
  const size_t T = x.size() / H;
  std::vector<float> scores(T * r.out);
  for (size_t t = 0; t < T; ++t) r.Scores(x.data() + t * H, scores.data() + t * r.out);
  return scores;
}

// Rows of a checkpoint matrix widened to float, [rows, cols].
absl::StatusOr<std::vector<float>> WidenedMatrix(const CheckpointTensors& ckpt, const std::string& name) {
  BS_ASSIGN_OR_RETURN(HostTensor t, ckpt.Get(name));
  size_t n = 1;
  for (int64_t d : t.shape) n *= static_cast<size_t>(d);
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = WidenedElement(t, i);
  return out;
}

void NormalizeRows(float* m, size_t rows, size_t width) {
  for (size_t r = 0; r < rows; ++r) {
    double s = 0;
    for (size_t c = 0; c < width; ++c) s += double{m[r * width + c]} * m[r * width + c];
    const float inv = s > 0 ? static_cast<float>(1.0 / std::sqrt(s)) : 0.0f;
    for (size_t c = 0; c < width; ++c) m[r * width + c] *= inv;
  }
}

}  // namespace

int DefaultModuleSize(int d_ff) {
  // About 96 modules per layer, as MoEfication's 32-neuron experts of a 3072-wide FFN: fine enough
  // that a token's top modules hold most of its activation (brick-tiny, docs/BENCHMARKS.md: 8
  // neurons beat 32 by 10 points of perplexity at density 0.3), few enough that the router stays
  // ~1 % of the FFN's weights.
  const double want = std::max(4.0, d_ff / 96.0);
  int best = d_ff;
  for (int s = 1; s <= d_ff; ++s) {
    if (d_ff % s == 0 && std::fabs(s - want) < std::fabs(best - want)) best = s;
  }
  return best;
}

absl::StatusOr<ModuleSet> BuildModuleSet(Engine& engine, std::span<const int32_t> calibration_ids,
                                         const CoreMap& core_map, const ModuleBuildOptions& o) {
  const auto started = std::chrono::steady_clock::now();
  const ModelConfig& c = engine.config();
  const int L = c.num_layers, H = c.hidden_size, I = c.intermediate_size;
  const int S = o.module_size > 0 ? o.module_size : DefaultModuleSize(I);
  if (I % S != 0) {
    return absl::InvalidArgumentError(absl::StrCat("--module-size ", S, " does not divide intermediate_size ", I));
  }
  const int N = I / S;
  if (o.clustering != "weights" && o.clustering != "coactivation") {
    return absl::InvalidArgumentError(absl::StrCat("clustering must be weights or coactivation, got ", o.clustering));
  }
  if (o.router != "auto" && o.router != "linear" && o.router != "centroid") {
    return absl::InvalidArgumentError(absl::StrCat("router must be auto, linear or centroid, got ", o.router));
  }
  if (o.holdout_every < 2) return absl::InvalidArgumentError("holdout_every must be at least 2");
  const auto ids = calibration_ids.first(std::min<size_t>(calibration_ids.size(), std::max(o.max_tokens, 0)));
  if (ids.size() < static_cast<size_t>(4 * o.holdout_every)) {
    return absl::InvalidArgumentError(absl::StrCat("the calibration text has ", ids.size(),
                                                   " tokens; a module build needs a few thousand"));
  }
  std::vector<float> densities = o.threshold_densities;
  if (densities.empty()) {
    for (int g = 1; g <= 20; ++g) densities.push_back(0.05f * g);
    densities.back() = 1.0f;
  }

  // Calibration pass: per layer the FFN inputs, the activations and a sample of |silu(gate)|.
  std::vector<LayerActivations> acts(L);
  const size_t gate_sample_every = std::max<size_t>(1, ids.size() / 512);
  std::vector<size_t> gate_rows_seen(L, 0);
  BS_RETURN_IF_ERROR(engine.RunCalibration(ids, [&](int l, ProbePoint p, std::span<const float> v) {
    LayerActivations& a = acts[l];
    if (p == ProbePoint::kFfnInput) a.x.insert(a.x.end(), v.begin(), v.end());
    if (p == ProbePoint::kDownInput) a.h.insert(a.h.end(), v.begin(), v.end());
    if (p == ProbePoint::kGate) {
      for (size_t r = 0; r < v.size() / I; ++r, ++gate_rows_seen[l]) {
        if (gate_rows_seen[l] % gate_sample_every != 0) continue;
        for (int j = 0; j < I; ++j) {
          const float g = v[r * I + j];
          a.gate_abs.push_back(ThresholdActivation(g));
        }
      }
    }
  }));

  BS_ASSIGN_OR_RETURN(CheckpointTensors ckpt, CheckpointTensors::Open(engine.info().model_dir));
  BS_ASSIGN_OR_RETURN(ModelIdentity identity, ComputeModelIdentity(engine.info().model_dir, c));
  ModuleSet set;
  set.model = identity;
  set.num_layers = L;
  set.hidden_size = H;
  set.intermediate_size = I;
  set.num_modules = N;
  set.module_size = S;
  set.clustering = o.clustering;
  set.calibration_tokens = static_cast<int64_t>(ids.size());
  set.threshold_densities = densities;
  set.layers.resize(L);
  nlohmann::json report = {{"layers", nlohmann::json::array()}};
  const int k_compare = std::clamp(static_cast<int>(std::lround(o.compare_density * N)), 1, N);
  int linear_kept = 0;

  for (int l = 0; l < L; ++l) {
    LayerActivations& a = acts[l];
    ModuleLayer& out = set.layers[l];
    const std::string p = absl::StrCat("model.layers.", l, ".mlp.");
    BS_ASSIGN_OR_RETURN(std::vector<float> gate, WidenedMatrix(ckpt, p + "gate_proj.weight"));
    // 1. Modules: balanced k-means over weights or over co-activation patterns.
    std::vector<float> points;
    int64_t dim = 0;
    if (o.clustering == "weights") {
      BS_ASSIGN_OR_RETURN(std::vector<float> up, WidenedMatrix(ckpt, p + "up_proj.weight"));
      NormalizeRows(gate.data(), I, H);
      NormalizeRows(up.data(), I, H);
      dim = 2 * H;
      points.resize(static_cast<size_t>(I) * dim);
      for (int j = 0; j < I; ++j) {
        std::copy_n(gate.data() + static_cast<size_t>(j) * H, H, points.data() + static_cast<size_t>(j) * dim);
        std::copy_n(up.data() + static_cast<size_t>(j) * H, H, points.data() + static_cast<size_t>(j) * dim + H);
      }
    } else {
      const std::vector<float> h_train = SplitRows(a.h, I, o.holdout_every, false);
      dim = static_cast<int64_t>(h_train.size() / I);
      points = CoactivationFeatures(h_train, dim, I, o.coactivation_top_fraction);
    }
    BalancedKMeansOptions km;
    km.seed = o.seed + l;
    BS_ASSIGN_OR_RETURN(std::vector<int32_t> owner, BalancedKMeans(points, I, dim, N, km));
    out.modules.resize(static_cast<size_t>(I));
    std::vector<int> fill(N, 0);
    for (int j = 0; j < I; ++j) out.modules[static_cast<size_t>(owner[j]) * S + fill[owner[j]]++] = j;

    // 2. Routers, compared on held-out tokens by how much of the oracle's top-k mass they catch.
    const std::vector<float> mass = ModuleMass(a.h, I, owner, N);
    const std::vector<float> x_train = SplitRows(a.x, H, o.holdout_every, false);
    const std::vector<float> y_train = SplitRows(mass, N, o.holdout_every, false);
    const std::vector<float> x_hold = SplitRows(a.x, H, o.holdout_every, true);
    const std::vector<float> y_hold = SplitRows(mass, N, o.holdout_every, true);
    const int64_t hold_rows = static_cast<int64_t>(x_hold.size() / H);
    RidgeAccumulator ridge(H, N);
    ridge.Add(x_train.data(), y_train.data(), static_cast<int64_t>(x_train.size() / H));
    BS_ASSIGN_OR_RETURN(LinearRouter linear, ridge.Solve(o.ridge_lambda));
    if (o.clustering != "weights") NormalizeRows(gate.data(), I, H);
    const LinearRouter centroid = CentroidRouter(gate, I, H, owner, N);
    const double recall_linear = TopKMassRecall(RouterScores(linear, x_hold, H), y_hold, hold_rows, N, k_compare);
    const double recall_centroid =
        TopKMassRecall(RouterScores(centroid, x_hold, H), y_hold, hold_rows, N, k_compare);
    const bool use_linear = o.router == "linear" || (o.router == "auto" && recall_linear >= recall_centroid);
    linear_kept += use_linear;
    const LinearRouter& kept = use_linear ? linear : centroid;
    out.router_weight = kept.weight;
    out.router_bias = kept.bias;

    // 3. Threshold policy: the |silu(gate)| quantile that keeps each density of the neurons.
    std::sort(a.gate_abs.begin(), a.gate_abs.end());
    for (float d : densities) {
      const size_t n = a.gate_abs.size();
      const size_t idx = std::min(n - 1, static_cast<size_t>(std::floor((1.0 - d) * n)));
      out.thresholds.push_back(d >= 1.0f || n == 0 ? 0.0f : a.gate_abs[idx]);
    }
    // 4. Resident: the neurons feeding the core map's super weights run whatever the router says.
    for (const SuperWeight& w : core_map.super_weights) {
      if (w.layer == l) out.resident.push_back(w.col);
    }
    std::sort(out.resident.begin(), out.resident.end());
    out.resident.erase(std::unique(out.resident.begin(), out.resident.end()), out.resident.end());
    report["layers"].push_back({{"layer", l},
                                {"recall_linear", recall_linear},
                                {"recall_centroid", recall_centroid},
                                {"router", use_linear ? "linear" : "centroid"},
                                {"resident", out.resident.size()}});
    a = LayerActivations{};  // free the layer's activations as we go
  }
  set.router = linear_kept == L ? "linear" : linear_kept == 0 ? "centroid" : "mixed";
  report["compare_density"] = o.compare_density;
  report["compare_k"] = k_compare;
  report["holdout_every"] = o.holdout_every;
  report["build_seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  set.report_json = report.dump();
  BS_RETURN_IF_ERROR(set.Validate());
  return set;
}

}  // namespace brickserve
