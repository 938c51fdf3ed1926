// LoRA adapters as the forward pass uses them: low-rank pairs (A, B) per layer and projection,
// applied unmerged (y = Wx + s·B(Ax)) so one batch can mix requests with different adapters and
// requests with none. Parsing adapter files is the bricks' business (bricks/lora/); this is the
// device-resident form and the per-step grouping of rows by adapter.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include "absl/strings/string_view.h"
#include <utility>
#include <vector>

#include "engine/backend/device.h"
#include "engine/model/config.h"

namespace brickserve {

// The projections of a Llama block a LoRA pair can target (PEFT's target_modules names).
enum class LoraTarget : int { kQ, kK, kV, kO, kGate, kUp, kDown };
inline constexpr int kNumLoraTargets = 7;

absl::string_view LoraTargetName(LoraTarget t);  // "q_proj", ..., "down_proj"
std::optional<LoraTarget> LoraTargetFromName(absl::string_view name);
// The Hugging Face module path of projection `t` of layer `layer`: "model.layers.3.self_attn.q_proj",
// "model.layers.3.mlp.down_proj" (weights, PEFT tensors and messages are named from it).
std::string LoraTargetModule(int layer, LoraTarget t);
// [out, in] of the base projection `t` under `config`.
std::pair<int64_t, int64_t> LoraTargetShape(const ModelConfig& config, LoraTarget t);

struct LoraPair {
  Weight a;            // [rank, in]
  Weight b;            // [rank, out]: PEFT's lora_B transposed at load (see LoraSegment)
  float scale = 1.0f;  // lora_alpha / rank, or lora_alpha / sqrt(rank) with rsLoRA
  bool present() const { return a.valid(); }
};

// An adapter resident on the device. Immutable once built; requests share it by shared_ptr, so an
// unload or an update frees it only after the last request using it has ended.
struct LoraAdapter {
  uint64_t id = 0;  // unique in the process (NextLoraAdapterId); a reload gets a new one
  std::vector<std::array<LoraPair, kNumLoraTargets>> layers;
  size_t bytes = 0;  // device memory held by the pairs
};

// A fresh adapter id: keys the prefix cache, so KV computed under one adapter version is never
// reused under another.
uint64_t NextLoraAdapterId();

// One adapter a request applies, with its weight (a request may combine several).
struct LoraUse {
  std::shared_ptr<const LoraAdapter> adapter;
  float weight = 1.0f;
};

// Checks that every use fits the model (layer count) and has a finite weight.
absl::Status ValidateLoraUses(std::span<const LoraUse> uses, const ModelConfig& config);

// The batch rows of one forward step grouped by adapter, built once per step and read by every
// layer. A request's k-th adapter falls in pass k, and passes run in order, so a row's deltas are
// summed in its own request's order whatever else is in the batch (batch-invariant output).
class LoraBatch {
 public:
  void Clear() { groups_.clear(); }
  // Rows [row_begin, row_begin + n) apply `uses`.
  void Add(int32_t row_begin, int32_t n, std::span<const LoraUse> uses);
  bool empty() const { return groups_.empty(); }
  // The segments of layer `layer` / projection `t`, in pass order.
  void Segments(int layer, LoraTarget t, std::vector<LoraSegment>* out) const;

 private:
  struct Group {
    const LoraAdapter* adapter;
    size_t pass;
    std::vector<int32_t> rows;
    std::vector<float> weights;
  };
  std::vector<Group> groups_;  // kept ordered by pass
};

}  // namespace brickserve
