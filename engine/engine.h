// The engine facade: a loaded model with its tokenizer on one device, and the generation loop.
// Everything above the engine (CLI, gRPC server) talks to this class.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend/device.h"
#include "engine/generate/generation.h"
#include "engine/kv/block_allocator.h"
#include "engine/model/config.h"
#include "engine/model/llama_model.h"
#include "engine/tokenizer/tokenizer.h"

namespace brickserve {

struct EngineOptions {
  std::string model_dir;
  DeviceOptions device;
  int max_context = 0;          // 0 = the model's own; otherwise at most that
  int max_batch_tokens = 512;   // rows per forward step; longer prompts are prefilled in chunks
  int kv_block_size = 16;
  int kv_cache_tokens = 0;      // KV pool size in tokens; 0 = one full context
};

struct EngineInfo {
  std::string model_dir;
  std::string architecture;
  std::string device;
  int vocab_size = 0;
  int max_context = 0;
  int num_layers = 0;
  int hidden_size = 0;
  size_t weight_bytes = 0;
  size_t kv_cache_bytes = 0;
  std::optional<int32_t> bos_id;  // the tokenizer's BOS token, if it has one
  std::vector<int32_t> eos_ids;   // every id that ends generation (unless ignore_eos)
};

class Engine {
 public:
  static absl::StatusOr<std::unique_ptr<Engine>> Load(const EngineOptions& options);

  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const ModelConfig& config() const { return config_; }
  const EngineInfo& info() const { return info_; }
  int max_context() const { return max_context_; }

  // Checks a request against the model's limits (INVALID_ARGUMENT naming field and limit).
  absl::Status Validate(const GenerationRequest& request) const;

  // Generates a continuation; `on_piece` (optional) streams the output as it becomes final and
  // may cancel; `should_stop` (optional) is polled between prefill chunks and at every decode
  // step. A cancelled generation returns OK with FinishReason::kCancelled. Requests run one at a
  // time for now.
  absl::StatusOr<GenerationResult> Generate(const GenerationRequest& request, const StreamCallback& on_piece = {},
                                            const StopCheck& should_stop = {});

  // Log-probabilities of each token of `ids` given the ones before it.
  absl::StatusOr<ScoreResult> Score(std::span<const int32_t> ids, int top_logprobs);

 private:
  Engine() = default;
  // Runs `ids` through the model at positions [start, start + ids.size()) in chunks of
  // max_batch_tokens; returns the logits of the last token, or of every token with `all_logits`.
  // Returns false (logits unset) when `should_stop` asked to stop between chunks.
  absl::StatusOr<bool> Prefill(std::span<const int32_t> ids, int start, BlockTable& table, bool all_logits,
                               std::vector<float>* logits, const StopCheck& should_stop = {});
  bool IsStopToken(const GenerationRequest& request, int32_t id) const;

  EngineOptions options_;
  ModelConfig config_;
  EngineInfo info_;
  int max_context_ = 0;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<Device> device_;
  std::unique_ptr<LlamaModel> model_;
  std::unique_ptr<BlockAllocator> blocks_;
  KvCache kv_cache_;
  std::vector<int32_t> eos_ids_;
  std::mutex mu_;  // one forward pass at a time
};

}  // namespace brickserve
