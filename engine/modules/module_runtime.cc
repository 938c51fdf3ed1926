#include "engine/modules/module_runtime.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "engine/util/status_macros.h"

namespace brickserve {
namespace {

// down_proj [H, I] transposed to [I, H] in its own storage type (a neuron's output weights become
// one contiguous row the sparse kernel can stream).
std::shared_ptr<std::vector<std::byte>> Transpose(const HostTensor& t) {
  const size_t rows = static_cast<size_t>(t.shape[0]), cols = static_cast<size_t>(t.shape[1]);
  const size_t e = DTypeSize(t.dtype);
  auto out = std::make_shared<std::vector<std::byte>>(rows * cols * e);
  const std::byte* src = static_cast<const std::byte*>(t.data);
  std::byte* dst = out->data();
  constexpr size_t kTile = 64;  // cache-friendly blocks
  for (size_t r0 = 0; r0 < rows; r0 += kTile) {
    for (size_t c0 = 0; c0 < cols; c0 += kTile) {
      for (size_t r = r0; r < std::min(rows, r0 + kTile); ++r) {
        for (size_t c = c0; c < std::min(cols, c0 + kTile); ++c) {
          std::memcpy(dst + (c * rows + r) * e, src + (r * cols + c) * e, e);
        }
      }
    }
  }
  return out;
}

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

float Silu(float g) { return g / (1.0f + std::exp(-g)); }

}  // namespace

absl::StatusOr<std::unique_ptr<ModuleRuntime>> ModuleRuntime::Create(std::shared_ptr<const ModuleSet> set,
                                                                     const ModelConfig& c,
                                                                     const CheckpointTensors& ckpt, Device* device,
                                                                     int max_rows) {
  if (set->num_layers != c.num_layers || set->hidden_size != c.hidden_size ||
      set->intermediate_size != c.intermediate_size) {
    return absl::FailedPreconditionError(absl::StrCat("the module set is for ", set->model.ToString(),
                                                      ", not for this model's shape"));
  }
  auto rt = std::unique_ptr<ModuleRuntime>(new ModuleRuntime(set, device));
  const int64_t N = set->num_modules, S = set->module_size, H = c.hidden_size, I = c.intermediate_size;
  for (int l = 0; l < c.num_layers; ++l) {
    const ModuleLayer& L = set->layers[l];
    HostTensor w{DType::kF32, {N, H}, L.router_weight.data(), nullptr};
    HostTensor b{DType::kF32, {N}, L.router_bias.data(), nullptr};
    // The CPU backend uses host memory in place: keep the set (which owns the data) alive with it.
    w.keep_alive = b.keep_alive = set;
    BS_ASSIGN_OR_RETURN(Weight rw, device->UploadWeight(w));
    BS_ASSIGN_OR_RETURN(Weight rb, device->UploadWeight(b));
    rt->router_w_.push_back(rw);
    rt->router_b_.push_back(rb);
    BS_ASSIGN_OR_RETURN(HostTensor down, ckpt.Get(absl::StrCat("model.layers.", l, ".mlp.down_proj.weight")));
    if (down.shape != std::vector<int64_t>{H, I}) {
      return absl::InvalidArgumentError(absl::StrCat("layer ", l, " down_proj has an unexpected shape"));
    }
    auto transposed = Transpose(down);
    HostTensor dt{down.dtype, {I, H}, transposed->data(), transposed};
    BS_ASSIGN_OR_RETURN(Weight dw, device->UploadWeight(dt));
    rt->down_t_.push_back(dw);
    rt->bytes_ += transposed->size() + static_cast<size_t>(N) * (H + 1) * sizeof(float);

    std::vector<uint8_t> resident(I);
    for (int32_t j : L.resident) resident[j] = 1;
    auto& modules = rt->module_neurons_.emplace_back(N);
    auto& owner = rt->neuron_module_.emplace_back(I, -1);
    for (int64_t m = 0; m < N; ++m) {
      for (int64_t s = 0; s < S; ++s) {
        const int32_t j = L.modules[m * S + s];
        owner[j] = static_cast<int32_t>(m);
        if (!resident[j]) modules[m].push_back(j);
      }
      std::sort(modules[m].begin(), modules[m].end());
    }
  }
  BS_ASSIGN_OR_RETURN(rt->scores_, device->AllocBuffer(static_cast<size_t>(max_rows) * N));
  return rt;
}

bool ModuleRuntime::NeedsActivations(std::span<const ModuleRow> rows) const {
  return std::any_of(rows.begin(), rows.end(), [](const ModuleRow& r) {
    return r.policy && r.policy->mode != RouterMode::kDense && r.policy->selector == ModuleSelector::kOracle;
  });
}

bool ModuleRuntime::NeedsGate(std::span<const ModuleRow> rows) const {
  return std::any_of(rows.begin(), rows.end(), [](const ModuleRow& r) {
    return r.policy && r.policy->mode != RouterMode::kDense && r.policy->selector == ModuleSelector::kThreshold;
  });
}

void ModuleRuntime::SelectTopK(int layer, const RouterPolicy& p, const float* scores,
                               std::vector<int32_t>* chosen) const {
  const int N = set_->num_modules;
  chosen->clear();
  for (int m = 0; m < N; ++m) {
    if (!p.disabled || !(*p.disabled)[static_cast<size_t>(layer) * N + m]) chosen->push_back(m);
  }
  const int k = std::min<int>(p.ModulesPerToken(N), static_cast<int>(chosen->size()));
  if (scores != nullptr && k < static_cast<int>(chosen->size())) {
    // Highest score first; ties to the lower module id, so the choice is deterministic.
    std::partial_sort(chosen->begin(), chosen->begin() + k, chosen->end(), [&](int32_t a, int32_t b) {
      return scores[a] > scores[b] || (scores[a] == scores[b] && a < b);
    });
  }
  chosen->resize(k);
  std::sort(chosen->begin(), chosen->end());
}

void ModuleRuntime::SelectRandom(int layer, const RouterPolicy& p, const ModuleRow& row,
                                 std::vector<int32_t>* chosen) const {
  SelectTopK(layer, RouterPolicy{RouterMode::kDense, p.selector, 0, 1.0f, p.disabled}, nullptr, chosen);
  const int k = std::min<int>(p.ModulesPerToken(set_->num_modules), static_cast<int>(chosen->size()));
  // A partial Fisher-Yates shuffle seeded by (layer, position, token): reproducible runs.
  uint64_t state = SplitMix64((static_cast<uint64_t>(layer) << 40) ^ (static_cast<uint64_t>(row.position) << 20) ^
                              static_cast<uint32_t>(row.token));
  for (int i = 0; i < k; ++i) {
    state = SplitMix64(state);
    const size_t j = i + state % (chosen->size() - i);
    std::swap((*chosen)[i], (*chosen)[j]);
  }
  chosen->resize(k);
  std::sort(chosen->begin(), chosen->end());
}

absl::Status ModuleRuntime::Run(int layer, const Buffer& x, std::span<const ModuleRow> rows, const Weight& gate_w,
                                const Weight& up_w, const Buffer* h, const Buffer* gate, Buffer& out) {
  const ModuleLayer& L = set_->layers[layer];
  const int N = set_->num_modules, S = set_->module_size, I = set_->intermediate_size;
  const int n_rows = static_cast<int>(rows.size());
  bool need_scores = false;
  for (const ModuleRow& r : rows) {
    need_scores |= r.policy && r.policy->mode != RouterMode::kDense && r.policy->selector == ModuleSelector::kRouter;
  }
  if (need_scores) {
    BS_RETURN_IF_ERROR(device_->MatMul(x, n_rows, router_w_[layer], &router_b_[layer], scores_));
    host_scores_.resize(static_cast<size_t>(n_rows) * N);
    BS_RETURN_IF_ERROR(device_->CopyToHost(scores_, 0, host_scores_));
  }
  const bool oracle = NeedsActivations(rows), threshold = NeedsGate(rows);
  if ((oracle && h == nullptr) || (threshold && gate == nullptr)) {
    return absl::InternalError("ModuleRuntime::Run: the oracle/threshold activations were not computed");
  }
  // Oracle rows read h, threshold rows read gate: one host copy, [rows, I], of whichever is needed
  // (a batch mixing both copies twice, one after the other).
  std::vector<float> host_h, host_gate;
  if (oracle) {
    host_h.resize(static_cast<size_t>(n_rows) * I);
    BS_RETURN_IF_ERROR(device_->CopyToHost(*h, 0, host_h));
  }
  if (threshold) {
    host_gate.resize(static_cast<size_t>(n_rows) * I);
    BS_RETURN_IF_ERROR(device_->CopyToHost(*gate, 0, host_gate));
  }
  BS_RETURN_IF_ERROR(device_->Synchronize());

  out_rows_.clear();
  group_rows_.assign(N + 1, {});  // [N] = the rows that take the resident neurons with their modules
  row_neurons_.clear();
  std::vector<int32_t> threshold_rows;
  std::vector<float> mass(N);
  const uint64_t resident = L.resident.size();
  for (int r = 0; r < n_rows; ++r) {
    const ModuleRow& row = rows[r];
    ModuleTrace* t = row.trace;
    if (t != nullptr) {
      if (t->empty()) t->Reset(set_->num_layers, N);
      if (layer == 0) ++t->tokens;
      t->neurons_total += I;
    }
    if (row.policy == nullptr || !row.policy->sparse()) {
      if (t != nullptr) {
        for (int m = 0; m < N; ++m) ++t->at(layer, m);
        t->neurons_computed += I;
      }
      continue;
    }
    const RouterPolicy& p = *row.policy;
    out_rows_.push_back(r);
    if (p.mode != RouterMode::kDense && p.selector == ModuleSelector::kThreshold) {
      const float cut = set_->ThresholdFor(layer, p.density);
      const float* g = host_gate.data() + static_cast<size_t>(r) * I;
      std::vector<int32_t>& neurons = row_neurons_.emplace_back();
      size_t next_resident = 0;
      for (int j = 0; j < I; ++j) {
        const bool is_resident = next_resident < L.resident.size() && L.resident[next_resident] == j;
        if (is_resident) ++next_resident;
        const int m = neuron_module_[layer][j];
        if (!is_resident && p.disabled && (*p.disabled)[static_cast<size_t>(layer) * N + m]) continue;
        if (is_resident || std::fabs(Silu(g[j])) >= cut) neurons.push_back(j);
      }
      threshold_rows.push_back(r);
      if (t != nullptr) {
        t->neurons_computed += neurons.size();
        std::vector<uint8_t> used(N);
        for (int32_t j : neurons) used[neuron_module_[layer][j]] = 1;
        for (int m = 0; m < N; ++m) t->at(layer, m) += used[m];
      }
      continue;
    }
    const float* scores = nullptr;
    if (p.mode == RouterMode::kDense) {
      scores = nullptr;  // every module not disabled
    } else if (p.selector == ModuleSelector::kRouter) {
      scores = host_scores_.data() + static_cast<size_t>(r) * N;
    } else if (p.selector == ModuleSelector::kOracle) {
      const float* hr = host_h.data() + static_cast<size_t>(r) * I;
      for (int m = 0; m < N; ++m) {
        float s = 0;
        for (int i = 0; i < S; ++i) s += std::fabs(hr[L.modules[static_cast<size_t>(m) * S + i]]);
        mass[m] = s;
      }
      scores = mass.data();
    }
    if (p.mode != RouterMode::kDense && p.selector == ModuleSelector::kRandom) {
      SelectRandom(layer, p, row, &chosen_);
    } else {
      SelectTopK(layer, p.mode == RouterMode::kDense ? RouterPolicy{RouterMode::kDense, p.selector, 0, 1.0f, p.disabled} : p,
                 scores, &chosen_);
    }
    group_rows_[N].push_back(r);
    uint64_t computed = resident;
    for (int32_t m : chosen_) {
      group_rows_[m].push_back(r);
      computed += module_neurons_[layer][m].size();
    }
    if (t != nullptr) {
      for (int32_t m : chosen_) ++t->at(layer, m);
      t->neurons_computed += computed;
    }
  }
  if (out_rows_.empty()) return absl::OkStatus();
  // Groups in a fixed order (resident neurons, modules by id, then per-row threshold sets), so each
  // row sums its neurons in the same order whatever else is in the batch.
  groups_.clear();
  if (!L.resident.empty() && !group_rows_[N].empty()) groups_.push_back({L.resident, group_rows_[N]});
  for (int m = 0; m < N; ++m) {
    if (!group_rows_[m].empty()) groups_.push_back({module_neurons_[layer][m], group_rows_[m]});
  }
  for (size_t i = 0; i < threshold_rows.size(); ++i) {
    groups_.push_back({row_neurons_[i], std::span<const int32_t>(&threshold_rows[i], 1)});
  }
  return device_->SparseFfn(x, gate_w, up_w, down_t_[layer], groups_, out_rows_, out);
}

}  // namespace brickserve
