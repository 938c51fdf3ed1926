// The Llama-family forward pass (Llama 2/3, Mistral, Qwen2), written once against the device
// interface: the same code drives the CPU backend and, later, the CUDA backend.
#pragma once

#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend/device.h"
#include "engine/model/config.h"
#include "engine/model/lora.h"
#include "engine/modules/module_runtime.h"

namespace brickserve {

// Which of a sequence's rows come back as logits.
enum class LogitRows { kNone, kLast, kAll };

// One sequence's share of a forward step: its new tokens and where they go.
struct SequenceInput {
  std::span<const int32_t> tokens;       // tokens to run (a prefill chunk, or one decode token)
  int32_t start_pos = 0;                 // position of tokens[0] = tokens already in the cache
  std::span<const int32_t> block_table;  // KV blocks covering positions [0, start_pos + tokens.size())
  LogitRows logits = LogitRows::kLast;   // kAll for scoring; kNone for a prompt chunk before the last
  std::span<const LoraUse> loras;        // adapters applied to this sequence's rows, in order
  // The FFN modules its tokens use (null: dense). A sequence whose adapters touch gate/up/down_proj
  // runs its FFN dense whatever the policy (the sparse kernel has no LoRA deltas).
  const RouterPolicy* router = nullptr;
  ModuleTrace* trace = nullptr;          // receives its module usage (needs a module set)
};

// Where an ActivationProbe sees a layer's activations (row-major [rows, width] on the host).
enum class ProbePoint {
  kFfnInput,    // post_attention_layernorm's output, the FFN (and router) input [rows, hidden_size]
  kGate,        // gate_proj's output before silu [rows, intermediate_size]
  kResidual,    // the hidden state after the layer [rows, hidden_size]
  kDownInput,   // silu(gate)·up, the input of down_proj [rows, intermediate_size]
  kDownOutput,  // down_proj's output before it is added to the residual [rows, hidden_size]
};
using ActivationProbe = std::function<void(int layer, ProbePoint point, std::span<const float> values)>;

struct LlamaWeights;

// Sampling on the device: one row per logits row of the batch, in batch order. Forward then fills
// `ids` and leaves `logits` empty (only the sampled ids cross to the host).
struct DeviceSampling {
  std::span<const SampleRow> rows;
  std::span<int32_t> ids;
};

class LlamaModel {
 public:
  // Binds the checkpoint in `model_dir` to `device`. `max_batch_tokens` bounds the rows of one
  // forward step (activation buffers are sized for it).
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Load(const std::string& model_dir, const ModelConfig& config,
                                                          Device* device, int max_batch_tokens);
  ~LlamaModel();

  const ModelConfig& config() const { return config_; }
  int max_batch_tokens() const { return max_batch_tokens_; }
  // Bytes of weights as stored in the checkpoint.
  size_t weight_bytes() const { return weight_bytes_; }

  // Runs one step over a batch of sequences (their KV entries are written to `cache`), and returns
  // logits [rows, vocab] for the rows that asked for them, in batch order.
  absl::Status Forward(std::span<const SequenceInput> batch, KvCache& cache, std::vector<float>* logits,
                       const DeviceSampling* sampling = nullptr);
  // Whether the device samples (DeviceSampling pays off): a GPU returns ids, not logits.
  bool samples_on_device() const { return device_->samples_on_device(); }

  // Binds a module set built for this model (ModuleRuntime::Create); null unbinds. Not while a
  // Forward runs.
  absl::Status SetModules(std::shared_ptr<const ModuleSet> set);
  const ModuleRuntime* modules() const { return modules_.get(); }

  // Calibration only (the core map): while set, Forward copies the probed activations to the host
  // and calls `probe` (a device sync per call). Unset (the default), Forward pays nothing for it.
  // Set and clear it on the thread that runs Forward.
  void set_probe(ActivationProbe probe) { probe_ = std::move(probe); }

 private:
  static constexpr int kLogitRowsPerPass = 32;
  LlamaModel(const ModelConfig& config, Device* device, int max_batch_tokens);
  absl::Status AllocateWorkspace();
  // y += the LoRA deltas of layer `layer` / projection `t` for the rows that use adapters.
  absl::Status ApplyLora(int layer, LoraTarget t, const Buffer& x, Buffer& y);
  absl::Status Probe(int layer, ProbePoint point, const Buffer& buf, size_t n);
  // The SwiGLU block of layer `layer` from normed_ into proj_: dense, sparse, or both (mixed batch).
  absl::Status Ffn(int layer, int rows);

  ModelConfig config_;
  std::string model_dir_;
  Device* device_;
  int max_batch_tokens_;
  size_t weight_bytes_ = 0;
  std::unique_ptr<LlamaWeights> weights_;
  // Activation buffers, sized for max_batch_tokens rows.
  LoraBatch lora_batch_;  // this step's rows grouped by adapter
  std::vector<LoraSegment> lora_segments_;
  std::unique_ptr<ModuleRuntime> modules_;
  std::vector<ModuleRow> module_rows_;   // this step's rows, for the module runtime
  bool any_sparse_rows_ = false, any_dense_rows_ = false, any_trace_ = false;
  ActivationProbe probe_;
  std::vector<float> probe_host_;
  Buffer hidden_, normed_, q_, k_, v_, attn_, proj_, gate_, up_, logits_rows_, logits_;
};

}  // namespace brickserve
