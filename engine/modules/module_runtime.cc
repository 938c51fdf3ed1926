#include "engine/modules/module_runtime.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "engine/util/status_macros.h"

namespace brickserve {
namespace {

// Rows `order` of a row-major matrix [*, cols] (transposed first when `transpose`: then the rows are
// the source's columns), in its own storage type. The sparse FFN reads a module's neurons as one
// contiguous block of these rows.
std::shared_ptr<std::vector<std::byte>> GatherRows(const HostTensor& t, const std::vector<int32_t>& order,
                                                   bool transpose) {
  const size_t rows = static_cast<size_t>(t.shape[0]), cols = static_cast<size_t>(t.shape[1]);
  const size_t e = DTypeSize(t.dtype);
  const size_t out_cols = transpose ? rows : cols;
  auto out = std::make_shared<std::vector<std::byte>>(order.size() * out_cols * e);
  const std::byte* src = static_cast<const std::byte*>(t.data);
  std::byte* dst = out->data();
  if (!transpose) {
    for (size_t i = 0; i < order.size(); ++i) std::memcpy(dst + i * cols * e, src + order[i] * cols * e, cols * e);
    return out;
  }
  constexpr size_t kTile = 64;  // blocks of the source rows, so its cache lines are reused
  for (size_t r0 = 0; r0 < rows; r0 += kTile) {
    for (size_t i = 0; i < order.size(); ++i) {
      const size_t c = static_cast<size_t>(order[i]);
      for (size_t r = r0; r < std::min(rows, r0 + kTile); ++r) {
        std::memcpy(dst + (i * rows + r) * e, src + (r * cols + c) * e, e);
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


// Whether the row picks its modules with selector `s` (dense rows pick none).
bool Picks(const ModuleRow& r, ModuleSelector s) {
  return r.policy != nullptr && r.policy->mode != RouterMode::kDense && r.policy->selector == s;
}

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
    // Neurons in module order (each module's ascending), the resident ones last.
    std::vector<uint8_t> resident(I);
    for (int32_t j : L.resident) resident[j] = 1;
    std::vector<int32_t>& order = rt->order_.emplace_back();
    auto& modules = rt->module_neurons_.emplace_back(N);
    auto& owner = rt->neuron_module_.emplace_back(I, -1);
    for (int64_t m = 0; m < N; ++m) {
      std::vector<int32_t> ids(L.modules.begin() + m * S, L.modules.begin() + (m + 1) * S);
      std::sort(ids.begin(), ids.end());
      for (int32_t j : ids) {
        if (resident[j]) continue;
        owner[order.size()] = static_cast<int32_t>(m);
        modules[m].push_back(static_cast<int32_t>(order.size()));
        order.push_back(j);
      }
    }
    auto& resident_slots = rt->resident_.emplace_back();
    for (int32_t j : L.resident) {
      resident_slots.push_back(static_cast<int32_t>(order.size()));
      order.push_back(j);
    }
    const std::string p = absl::StrCat("model.layers.", l, ".mlp.");
    Weight* targets[] = {&rt->gate_.emplace_back(), &rt->up_.emplace_back(), &rt->down_t_.emplace_back()};
    const char* names[] = {"gate_proj", "up_proj", "down_proj"};
    for (int i = 0; i < 3; ++i) {
      BS_ASSIGN_OR_RETURN(HostTensor t, ckpt.Get(p + names[i] + ".weight"));
      if (t.shape != (i < 2 ? std::vector<int64_t>{I, H} : std::vector<int64_t>{H, I})) {
        return absl::InvalidArgumentError(absl::StrCat("layer ", l, " ", names[i], " has an unexpected shape"));
      }
      auto rows = GatherRows(t, order, /*transpose=*/i == 2);
      HostTensor copy{t.dtype, {I, H}, rows->data(), rows};
      BS_ASSIGN_OR_RETURN(*targets[i], device->UploadWeight(copy));
      rt->bytes_ += rows->size();
    }
    rt->bytes_ += static_cast<size_t>(N) * (H + 1) * sizeof(float);
  }
  BS_ASSIGN_OR_RETURN(rt->scores_, device->AllocBuffer(static_cast<size_t>(max_rows) * N));
  return rt;
}

bool ModuleRuntime::NeedsActivations(std::span<const ModuleRow> rows) const {
  return std::any_of(rows.begin(), rows.end(), [](const ModuleRow& r) { return Picks(r, ModuleSelector::kOracle); });
}

bool ModuleRuntime::NeedsGate(std::span<const ModuleRow> rows) const {
  return std::any_of(rows.begin(), rows.end(), [](const ModuleRow& r) { return Picks(r, ModuleSelector::kThreshold); });
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

absl::Status ModuleRuntime::Run(int layer, const Buffer& x, std::span<const ModuleRow> rows, const Buffer* h,
                                const Buffer* gate, Buffer& out) {
  const ModuleLayer& L = set_->layers[layer];
  const int N = set_->num_modules, S = set_->module_size, I = set_->intermediate_size;
  const int n_rows = static_cast<int>(rows.size());
  if (std::any_of(rows.begin(), rows.end(), [](const ModuleRow& r) { return Picks(r, ModuleSelector::kRouter); })) {
    BS_RETURN_IF_ERROR(device_->MatMul(x, n_rows, router_w_[layer], &router_b_[layer], scores_));
    host_scores_.resize(static_cast<size_t>(n_rows) * N);
    BS_RETURN_IF_ERROR(device_->CopyToHost(scores_, 0, host_scores_));
  }
  const bool oracle = NeedsActivations(rows), threshold = NeedsGate(rows);
  if ((oracle && h == nullptr) || (threshold && gate == nullptr)) {
    return absl::InternalError("ModuleRuntime::Run: the oracle/threshold activations were not computed");
  }
  // Oracle rows read h, threshold rows read gate: a host copy [rows, I] of each that is needed.
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
  // [N] = the rows that take the resident neurons with their modules. Cleared, not rebuilt: the
  // inner vectors keep their capacity from layer to layer and step to step.
  group_rows_.resize(N + 1);
  for (auto& g : group_rows_) g.clear();
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
    if (Picks(row, ModuleSelector::kThreshold)) {
      const float cut = set_->ThresholdFor(layer, p.density);
      const float* g = host_gate.data() + static_cast<size_t>(r) * I;
      std::vector<int32_t>& neurons = row_neurons_.emplace_back();
      const std::vector<int32_t>& order = order_[layer];
      for (int slot = 0; slot < I; ++slot) {
        const int m = neuron_module_[layer][slot];  // -1: resident
        if (m >= 0 && p.disabled && (*p.disabled)[static_cast<size_t>(layer) * N + m]) continue;
        if (m < 0 || ThresholdActivation(g[order[slot]]) >= cut) neurons.push_back(slot);
      }
      threshold_rows.push_back(r);
      if (t != nullptr) {
        t->neurons_computed += neurons.size();
        std::vector<uint8_t> used(N);
        for (int32_t slot : neurons) {
          if (neuron_module_[layer][slot] >= 0) used[neuron_module_[layer][slot]] = 1;
        }
        for (int m = 0; m < N; ++m) t->at(layer, m) += used[m];
      }
      continue;
    }
    const float* scores = nullptr;  // dense minus disabled modules: all the others
    if (Picks(row, ModuleSelector::kRouter)) {
      scores = host_scores_.data() + static_cast<size_t>(r) * N;
    } else if (Picks(row, ModuleSelector::kOracle)) {
      const float* hr = host_h.data() + static_cast<size_t>(r) * I;
      for (int m = 0; m < N; ++m) {
        float s = 0;
        for (int i = 0; i < S; ++i) s += std::fabs(hr[L.modules[static_cast<size_t>(m) * S + i]]);
        mass[m] = s;
      }
      scores = mass.data();
    }
    if (Picks(row, ModuleSelector::kRandom)) {
      SelectRandom(layer, p, row, &chosen_);
    } else {
      SelectTopK(layer, p, scores, &chosen_);
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
  if (!resident_[layer].empty() && !group_rows_[N].empty()) groups_.push_back({resident_[layer], group_rows_[N]});
  for (int m = 0; m < N; ++m) {
    if (!group_rows_[m].empty()) groups_.push_back({module_neurons_[layer][m], group_rows_[m]});
  }
  for (size_t i = 0; i < threshold_rows.size(); ++i) {
    groups_.push_back({row_neurons_[i], std::span<const int32_t>(&threshold_rows[i], 1)});
  }
  return device_->SparseFfn(x, gate_[layer], up_[layer], down_t_[layer], groups_, out_rows_, out);
}

}  // namespace brickserve
