// The emergent modules at run time: the module set's device-side weights (routers; copies of
// gate/up/down_proj with each module's neurons in one contiguous block, down_proj transposed so a
// neuron's output weights are one row) and the per-layer step that picks each row's modules and
// runs the sparse FFN through the device interface.
#pragma once

#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend/device.h"
#include "engine/model/config.h"
#include "engine/model/safetensors.h"
#include "engine/modules/module_set.h"
#include "engine/modules/module_trace.h"
#include "engine/modules/router_policy.h"

namespace brickserve {

// One batch row's part in a layer's sparse FFN.
struct ModuleRow {
  const RouterPolicy* policy = nullptr;  // null or dense: the row took the dense FFN
  ModuleTrace* trace = nullptr;          // where its module usage goes (null: nowhere)
  int32_t position = 0;                  // for the random selector
  int32_t token = 0;
};

class ModuleRuntime {
 public:
  // Uploads the routers and the module-ordered FFN copies (from `ckpt`): memory for one more copy
  // of the FFN weights, paid only when a module set is loaded. The dense path keeps the originals.
  static absl::StatusOr<std::unique_ptr<ModuleRuntime>> Create(std::shared_ptr<const ModuleSet> set,
                                                               const ModelConfig& config,
                                                               const CheckpointTensors& ckpt, Device* device,
                                                               int max_rows);

  // Device bytes held (transposed down weights and routers).
  size_t bytes() const { return bytes_; }

  // What a layer's selectors need before Run: `h` = silu(gate·x)·(up·x) of every row when a row
  // uses the oracle, `gate` = gate·x when one uses thresholds. The caller computes them densely.
  bool NeedsActivations(std::span<const ModuleRow> rows) const;
  bool NeedsGate(std::span<const ModuleRow> rows) const;

  // For every row with a sparse policy: picks its modules (router scores of `x`, `h`, `gate` or
  // random), writes the sparse FFN output into `out` (other rows untouched) and records usage.
  // Rows with a dense policy only get their usage recorded (every module).
  absl::Status Run(int layer, const Buffer& x, std::span<const ModuleRow> rows, const Buffer* h, const Buffer* gate,
                   Buffer& out);

 private:
  ModuleRuntime(std::shared_ptr<const ModuleSet> set, Device* device) : set_(std::move(set)), device_(device) {}
  void SelectTopK(int layer, const RouterPolicy& p, const float* scores, std::vector<int32_t>* chosen) const;
  void SelectRandom(int layer, const RouterPolicy& p, const ModuleRow& row, std::vector<int32_t>* chosen) const;

  std::shared_ptr<const ModuleSet> set_;
  Device* device_;
  size_t bytes_ = 0;
  std::vector<Weight> router_w_, router_b_;
  // Per layer, the FFN weights with neurons in "slot" order: modules one after the other (resident
  // neurons left out), then the resident neurons. order_[l][slot] = the original neuron id.
  std::vector<Weight> gate_, up_, down_t_;
  std::vector<std::vector<int32_t>> order_;
  std::vector<std::vector<std::vector<int32_t>>> module_neurons_;  // [l][m]: its slots (consecutive)
  std::vector<std::vector<int32_t>> resident_;                     // [l]: the resident slots
  std::vector<std::vector<int32_t>> neuron_module_;                // [l][slot]: module, -1 resident
  Buffer scores_;
  // Per-call scratch.
  std::vector<float> host_scores_;
  std::vector<std::vector<int32_t>> group_rows_;
  std::vector<std::vector<int32_t>> row_neurons_;
  std::vector<FfnNeuronGroup> groups_;
  std::vector<int32_t> out_rows_, chosen_;
};

}  // namespace brickserve
