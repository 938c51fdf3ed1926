#include "engine/model/lora.h"

#include <atomic>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace brickserve {

namespace {
constexpr std::array<absl::string_view, kNumLoraTargets> kTargetNames = {
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
}  // namespace

absl::string_view LoraTargetName(LoraTarget t) { return kTargetNames[static_cast<int>(t)]; }

std::optional<LoraTarget> LoraTargetFromName(absl::string_view name) {
  for (int i = 0; i < kNumLoraTargets; ++i) {
    if (kTargetNames[i] == name) return static_cast<LoraTarget>(i);
  }
  return std::nullopt;
}

std::string LoraTargetModule(int layer, LoraTarget t) {
  return absl::StrCat("model.layers.", layer, t <= LoraTarget::kO ? ".self_attn." : ".mlp.", LoraTargetName(t));
}

std::pair<int64_t, int64_t> LoraTargetShape(const ModelConfig& c, LoraTarget t) {
  const int64_t H = c.hidden_size, I = c.intermediate_size;
  const int64_t QD = int64_t{c.num_heads} * c.head_dim, KD = int64_t{c.num_kv_heads} * c.head_dim;
  switch (t) {
    case LoraTarget::kQ: return {QD, H};
    case LoraTarget::kK: return {KD, H};
    case LoraTarget::kV: return {KD, H};
    case LoraTarget::kO: return {H, QD};
    case LoraTarget::kGate: return {I, H};
    case LoraTarget::kUp: return {I, H};
    case LoraTarget::kDown: return {H, I};
  }
  return {0, 0};
}

uint64_t NextLoraAdapterId() {
  static std::atomic<uint64_t> next{1};
  return next.fetch_add(1);
}

absl::Status ValidateLoraUses(std::span<const LoraUse> uses, const ModelConfig& config) {
  for (size_t i = 0; i < uses.size(); ++i) {
    const LoraUse& u = uses[i];
    if (u.adapter == nullptr) return absl::InvalidArgumentError(absl::StrCat("adapter ", i, " is null"));
    if (static_cast<int>(u.adapter->layers.size()) != config.num_layers) {
      return absl::FailedPreconditionError(absl::StrCat("adapter ", i, " has ", u.adapter->layers.size(),
                                                        " layers; the model has ", config.num_layers));
    }
    if (!std::isfinite(u.weight)) {
      return absl::InvalidArgumentError(absl::StrCat("adapter ", i, " has a non-finite weight"));
    }
  }
  return absl::OkStatus();
}

void LoraBatch::Add(int32_t row_begin, int32_t n, std::span<const LoraUse> uses) {
  for (size_t pass = 0; pass < uses.size(); ++pass) {
    const LoraAdapter* a = uses[pass].adapter.get();
    Group* g = nullptr;
    for (auto& cand : groups_) {
      if (cand.adapter == a && cand.pass == pass) g = &cand;
    }
    if (g == nullptr) {
      // Insert after the last group of the same or an earlier pass, keeping pass order.
      auto it = groups_.begin();
      while (it != groups_.end() && it->pass <= pass) ++it;
      g = &*groups_.insert(it, Group{a, pass, {}, {}});
    }
    for (int32_t r = row_begin; r < row_begin + n; ++r) {
      g->rows.push_back(r);
      g->weights.push_back(uses[pass].weight);
    }
  }
}

void LoraBatch::Segments(int layer, LoraTarget t, std::vector<LoraSegment>* out) const {
  out->clear();
  for (const Group& g : groups_) {
    const LoraPair& p = g.adapter->layers[layer][static_cast<int>(t)];
    if (!p.present()) continue;
    out->push_back({&p.a, &p.b, p.scale, g.rows, g.weights});
  }
}

}  // namespace brickserve
