// The engine facade: a loaded model with its tokenizer on one device, and the generation loop.
// Everything above the engine (CLI, gRPC server) talks to this class.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/backend/device.h"
#include "engine/generate/generation.h"
#include "engine/kv/block_pool.h"
#include "engine/model/config.h"
#include "engine/model/core_map.h"
#include "engine/model/llama_model.h"
#include "engine/serving/engine_stats.h"
#include "engine/serving/scheduler.h"
#include "engine/serving/sequence.h"
#include "engine/tokenizer/tokenizer.h"

namespace brickserve {

struct EngineOptions {
  std::string model_dir;
  DeviceOptions device;
  int max_context = 0;          // 0 = the model's own; otherwise at most that
  int max_batch_tokens = 512;   // rows per forward step; longer prompts are prefilled in chunks
  int kv_block_size = 16;
  int kv_cache_tokens = 0;      // KV pool size in tokens; 0 = one full context. The context is
                                // capped at the pool, so one request can always run alone.
  int max_running = 64;         // requests batched together
  int prefill_chunk_tokens = 0; // prompt rows a step may add while requests decode; 0 = max_batch_tokens
  double max_step_ms = 0;       // time target of a step while requests decode (sizes prompt chunks); 0 = none
  double max_step_ratio = 2.5;  // without max_step_ms: the target as a multiple of a lone decode step; 0 = none
  int max_queued_requests = 256;
  int64_t max_queued_tokens = 0;  // prompt tokens waiting; 0 = no limit
  bool prefix_cache = true;     // share the KV of common prompt prefixes between requests
  std::string modules_path;     // a module set (`brickserve modules build`) for sparse FFN policies
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
  std::string modules_path;       // the loaded module set, if any
  int num_modules = 0;            // per layer
  size_t module_bytes = 0;        // routers and transposed down_proj copies
};

class Engine {
 public:
  static absl::StatusOr<std::unique_ptr<Engine>> Load(const EngineOptions& options);

  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const ModelConfig& config() const { return config_; }
  const EngineInfo& info() const { return info_; }
  int max_context() const { return max_context_; }
  // The device, for bricks to upload their weights to (UploadWeight may run beside a forward step).
  Device* device() const { return device_.get(); }
  // The loaded module set (null without one).
  const ModuleSet* modules() const { return modules_.get(); }

  // Checks a request against the model's limits (INVALID_ARGUMENT naming field and limit).
  absl::Status Validate(const GenerationRequest& request) const;

  // Queues a request for continuous batching. INVALID_ARGUMENT for a bad request,
  // RESOURCE_EXHAUSTED when the queue is full, UNAVAILABLE while draining. Otherwise `on_done`
  // runs exactly once, on the scheduler thread, as does every `on_piece` (which may cancel by
  // returning false). A cancelled or stopped request ends OK with FinishReason::kCancelled.
  absl::StatusOr<uint64_t> Submit(GenerationRequest request, SubmitOptions options, StreamCallback on_piece,
                                  DoneCallback on_done);
  void Cancel(uint64_t id) { scheduler_->Cancel(id); }
  // Draining: refuse new requests, wait for the accepted ones, then end the rest.
  void StopAccepting() { scheduler_->StopAccepting(); }
  bool WaitUntilIdle(Clock::time_point deadline) { return scheduler_->WaitUntilIdle(deadline); }
  void AbortAll(const absl::Status& status) { scheduler_->AbortAll(status); }
  EngineStats Stats() const { return scheduler_->Stats(); }

  // Submit, then wait for the result (the CLI and tests). `should_stop` is polled at every step.
  absl::StatusOr<GenerationResult> Generate(const GenerationRequest& request, const StreamCallback& on_piece = {},
                                            const StopCheck& should_stop = {});

  // Log-probabilities of each token of `ids` given the ones before it.
  // `router` picks the FFN modules (null: dense); `trace` receives their usage.
  absl::StatusOr<ScoreResult> Score(std::span<const int32_t> ids, int top_logprobs,
                                    const RouterPolicy* router = nullptr, ModuleTrace* trace = nullptr);

  // The core map of the loaded model on `calibration_ids` (the default: DefaultCalibrationText()
  // encoded with special tokens). The passes run between scheduler steps, like Score, in windows of
  // at most max_context tokens; the base norms are then read from the checkpoint.
  // Runs `ids` through the model (dense, between scheduler steps, in windows of at most max_context
  // tokens, each from position 0) with `probe` seeing every layer's activations.
  absl::Status RunCalibration(std::span<const int32_t> ids, const ActivationProbe& probe);

  absl::StatusOr<CoreMap> ComputeCoreMap(std::span<const int32_t> calibration_ids, const CoreMapOptions& options = {});

  // Start-up: the map at `path` when it exists (FAILED_PRECONDITION when it belongs to another model:
  // a stale map is refused, never silently replaced); otherwise computed on DefaultCalibrationText()
  // and written to `path`. A failed write (a read-only model directory) does not fail the call: it is
  // reported in `*write_status` for the caller to log. `*computed` says which way the map came.
  // A map computed at another ratio than `options.ratio` is refused too.
  absl::StatusOr<CoreMap> LoadOrComputeCoreMap(const std::string& path, const CoreMapOptions& options = {},
                                               bool* computed = nullptr, absl::Status* write_status = nullptr);

 private:
  Engine() = default;
  // Scoring pass on the scheduler thread: every token's logits, in chunks of max_batch_tokens.
  absl::Status ScoreLogits(std::span<const int32_t> ids, std::vector<float>* logits, const RouterPolicy* router,
                           ModuleTrace* trace);

  EngineOptions options_;
  ModelConfig config_;
  EngineInfo info_;
  int max_context_ = 0;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<Device> device_;
  std::unique_ptr<LlamaModel> model_;
  std::shared_ptr<const ModuleSet> modules_;
  std::unique_ptr<BlockPool> blocks_;
  KvCache kv_cache_;
  std::vector<int32_t> eos_ids_;
  std::unique_ptr<Scheduler> scheduler_;  // last: stopped first, while what it uses is alive
};

}  // namespace brickserve
