#include "engine/engine.h"

#include <algorithm>
#include <filesystem>
#include <future>

#include "absl/hash/hash.h"
#include "absl/strings/str_cat.h"
#include "engine/model/calibration_text.h"
#include "engine/util/status_macros.h"

namespace brickserve {

const char* FinishReasonName(FinishReason r) {
  switch (r) {
    case FinishReason::kLength: return "length";
    case FinishReason::kStop: return "stop";
    case FinishReason::kContext: return "context";
    case FinishReason::kCancelled: return "cancelled";
  }
  return "unknown";
}

std::vector<int32_t> GenerationResult::token_ids() const {
  std::vector<int32_t> ids;
  ids.reserve(tokens.size());
  for (const auto& t : tokens) ids.push_back(t.id);
  return ids;
}

absl::StatusOr<std::unique_ptr<Engine>> Engine::Load(const EngineOptions& options) {
  namespace fs = std::filesystem;
  auto e = std::unique_ptr<Engine>(new Engine());
  e->options_ = options;
  BS_ASSIGN_OR_RETURN(e->config_, LoadModelConfig(options.model_dir));
  const fs::path dir(options.model_dir);
  if (!fs::exists(dir / "tokenizer.json")) {
    return absl::NotFoundError(absl::StrCat(options.model_dir, ": no tokenizer.json"));
  }
  const fs::path tok_config = dir / "tokenizer_config.json";
  BS_ASSIGN_OR_RETURN(e->tokenizer_, Tokenizer::Load((dir / "tokenizer.json").string(),
                                                     fs::exists(tok_config) ? tok_config.string() : ""));
  if (e->tokenizer_->vocab_size() > e->config_.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat("tokenizer.json has ", e->tokenizer_->vocab_size(),
                                                   " tokens but config.json vocab_size is ", e->config_.vocab_size));
  }
  e->max_context_ = e->config_.max_context();
  if (options.max_context > 0) e->max_context_ = std::min(e->max_context_, options.max_context);
  if (options.max_batch_tokens <= 0 || options.kv_block_size <= 0 || options.max_running <= 0 ||
      options.max_queued_requests < 0 || options.kv_cache_tokens < 0 || options.prefill_chunk_tokens < 0 ||
      !(options.max_step_ms >= 0) || !(options.max_step_ratio >= 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "engine options: max_batch_tokens (", options.max_batch_tokens, "), kv_block_size (", options.kv_block_size,
        ") and max_running (", options.max_running, ") must be positive; max_queued_requests, kv_cache_tokens "
        "prefill_chunk_tokens, max_step_ms and max_step_ratio must not be negative"));
  }
  BS_ASSIGN_OR_RETURN(e->device_, CreateDevice(options.device));
  BS_ASSIGN_OR_RETURN(e->model_, LlamaModel::Load(options.model_dir, e->config_, e->device_.get(),
                                                  options.max_batch_tokens));
  if (!options.modules_path.empty()) {
    BS_ASSIGN_OR_RETURN(e->modules_, ReadModuleSetFor(options.modules_path, options.model_dir, e->config_));
    BS_RETURN_IF_ERROR(e->model_->SetModules(e->modules_));
  }
  const int kv_tokens = options.kv_cache_tokens > 0 ? options.kv_cache_tokens : e->max_context_;
  KvCacheSpec spec;
  spec.num_layers = e->config_.num_layers;
  spec.num_kv_heads = e->config_.num_kv_heads;
  spec.head_dim = e->config_.head_dim;
  spec.block_size = options.kv_block_size;
  spec.num_blocks = (kv_tokens + spec.block_size - 1) / spec.block_size;
  BS_ASSIGN_OR_RETURN(e->kv_cache_, e->device_->AllocKvCache(spec));
  e->blocks_ = std::make_unique<BlockPool>(spec.num_blocks, spec.block_size, options.prefix_cache);
  // One request must always fit alone in the pool, or preemption could not guarantee progress.
  e->max_context_ = std::min(e->max_context_, spec.num_blocks * spec.block_size);

  e->eos_ids_ = e->config_.eos_token_ids;
  if (e->eos_ids_.empty() && e->tokenizer_->eos_id()) e->eos_ids_.push_back(*e->tokenizer_->eos_id());

  auto& info = e->info_;
  info.model_dir = options.model_dir;
  info.architecture = e->config_.architecture_name;
  info.device = e->device_->name();
  info.vocab_size = e->config_.vocab_size;
  info.max_context = e->max_context_;
  info.num_layers = e->config_.num_layers;
  info.hidden_size = e->config_.hidden_size;
  info.weight_bytes = e->model_->weight_bytes();
  info.kv_cache_bytes = spec.bytes();
  info.bos_id = e->tokenizer_->bos_id();
  info.eos_ids = e->eos_ids_;
  if (e->modules_) {
    info.modules_path = options.modules_path;
    info.num_modules = e->modules_->num_modules;
    info.module_bytes = e->model_->modules()->bytes();
  }

  SchedulerOptions so;
  so.max_batch_tokens = options.max_batch_tokens;
  so.max_running = options.max_running;
  so.prefill_chunk_tokens = options.prefill_chunk_tokens;
  so.max_step_ms = options.max_step_ms;
  so.max_step_ratio = options.max_step_ratio;
  so.max_queued_requests = options.max_queued_requests;
  so.max_queued_tokens = options.max_queued_tokens;
  so.max_context = e->max_context_;
  e->scheduler_ = std::make_unique<Scheduler>(e->model_.get(), &e->kv_cache_, e->blocks_.get(), e->tokenizer_.get(),
                                              &e->eos_ids_, so);
  return e;
}

absl::Status Engine::Validate(const GenerationRequest& r) const {
  if (r.prompt_ids.empty()) return absl::InvalidArgumentError("prompt is empty: at least one token is required");
  const int n = static_cast<int>(r.prompt_ids.size());
  if (n >= max_context_) {
    return absl::InvalidArgumentError(absl::StrCat("prompt has ", n, " tokens; the context holds ", max_context_,
                                                   " and at least one must remain for output"));
  }
  for (int32_t id : r.prompt_ids) {
    if (id < 0 || id >= config_.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("prompt token id ", id, " is outside the vocabulary [0, ",
                                                     config_.vocab_size, ")"));
    }
  }
  if (r.max_new_tokens < 1 || r.max_new_tokens > max_context_) {
    return absl::InvalidArgumentError(absl::StrCat("max_new_tokens = ", r.max_new_tokens,
                                                   " is out of range: must be in [1, ", max_context_, "]"));
  }
  if (r.top_logprobs < 0 || r.top_logprobs > 20) {
    return absl::InvalidArgumentError(absl::StrCat("top_logprobs = ", r.top_logprobs, " is out of range: must be in [0, 20]"));
  }
  for (int32_t id : r.stop_token_ids) {
    if (id < 0 || id >= config_.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("stop_token_ids: ", id, " is outside the vocabulary [0, ",
                                                     config_.vocab_size, ")"));
    }
  }
  BS_RETURN_IF_ERROR(ValidateLoraUses(r.loras, config_));
  BS_RETURN_IF_ERROR(ValidateRouterPolicy(r.router, modules_.get()));
  return ValidateSamplingParams(r.sampling, config_.vocab_size);
}

absl::StatusOr<uint64_t> Engine::Submit(GenerationRequest request, SubmitOptions options, StreamCallback on_piece,
                                        DoneCallback on_done) {
  BS_RETURN_IF_ERROR(Validate(request));
  // Adapters change the KV, so prompts share cached KV only under the same adapters and weights.
  for (const LoraUse& u : request.loras) {
    options.prefix_namespace = absl::HashOf(options.prefix_namespace, u.adapter->id, u.weight);
  }
  // So does a sparse FFN: KV computed under one router policy is reused only under the same one.
  if (const RouterPolicy& p = request.router; p.sparse()) {
    options.prefix_namespace = absl::HashOf(options.prefix_namespace, static_cast<int>(p.mode),
                                            static_cast<int>(p.selector), p.k, p.density, p.disabled.get());
  }
  return scheduler_->Submit(std::move(request), std::move(options), std::move(on_piece), std::move(on_done));
}

absl::StatusOr<GenerationResult> Engine::Generate(const GenerationRequest& request, const StreamCallback& on_piece,
                                                  const StopCheck& should_stop) {
  std::promise<absl::StatusOr<GenerationResult>> promise;
  auto future = promise.get_future();
  SubmitOptions options;
  options.should_stop = should_stop;
  BS_RETURN_IF_ERROR(Submit(request, std::move(options), on_piece,
                            [&promise](absl::StatusOr<GenerationResult> r) { promise.set_value(std::move(r)); })
                         .status());
  return future.get();
}

absl::Status Engine::ScoreLogits(std::span<const int32_t> ids, std::vector<float>* logits,
                                 const RouterPolicy* router, ModuleTrace* trace) {
  BlockTable table(blocks_.get());
  BS_RETURN_IF_ERROR(table.Reserve(static_cast<int>(ids.size())));
  logits->clear();
  std::vector<float> chunk_logits;
  const size_t chunk = static_cast<size_t>(model_->max_batch_tokens());
  for (size_t off = 0; off < ids.size(); off += chunk) {
    const size_t n = std::min(chunk, ids.size() - off);
    SequenceInput in{ids.subspan(off, n), static_cast<int32_t>(off), table.blocks(), LogitRows::kAll, {}, router,
                     trace};
    BS_RETURN_IF_ERROR(model_->Forward(std::span<const SequenceInput>(&in, 1), kv_cache_, &chunk_logits));
    logits->insert(logits->end(), chunk_logits.begin(), chunk_logits.end());
  }
  return absl::OkStatus();
}

absl::StatusOr<ScoreResult> Engine::Score(std::span<const int32_t> ids, int top_logprobs, const RouterPolicy* router,
                                          ModuleTrace* trace) {
  if (ids.size() < 2) return absl::InvalidArgumentError("scoring needs at least two tokens");
  if (router != nullptr) BS_RETURN_IF_ERROR(ValidateRouterPolicy(*router, modules_.get()));
  if (static_cast<int>(ids.size()) > max_context_) {
    return absl::InvalidArgumentError(absl::StrCat("scoring ", ids.size(), " tokens exceeds the context of ", max_context_));
  }
  for (int32_t id : ids) {
    if (id < 0 || id >= config_.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", id, " is outside the vocabulary"));
    }
  }
  std::vector<float> logits;
  // The last token's logits are not needed: they would score a token that is not there. The pass
  // runs between scheduler steps; its blocks come from the shared pool.
  BS_RETURN_IF_ERROR(scheduler_->RunExclusive([&] { return ScoreLogits(ids.first(ids.size() - 1), &logits, router, trace); }));
  ScoreResult out;
  const size_t V = config_.vocab_size;
  for (size_t i = 1; i < ids.size(); ++i) {
    std::span<const float> row(logits.data() + (i - 1) * V, V);
    GeneratedToken t;
    t.id = ids[i];
    t.logprob = LogprobOf(row, ids[i]);
    if (top_logprobs > 0) t.top = TopLogprobs(row, top_logprobs);
    out.total_logprob += t.logprob;
    out.tokens.push_back(std::move(t));
  }
  return out;
}

absl::StatusOr<CoreMap> Engine::ComputeCoreMap(std::span<const int32_t> ids, const CoreMapOptions& options) {
  if (ids.empty()) return absl::InvalidArgumentError("core map: the calibration text has no tokens");
  for (int32_t id : ids) {
    if (id < 0 || id >= config_.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("core map: calibration token id ", id, " is outside the vocabulary"));
    }
  }
  CoreMapRecorder recorder(config_);
  BS_RETURN_IF_ERROR(
      RunCalibration(ids, [&recorder](int l, ProbePoint p, std::span<const float> v) { recorder.Observe(l, p, v); }));
  recorder.AddTokens(static_cast<int64_t>(ids.size()));
  return recorder.Finish(options_.model_dir, options);
}

absl::Status Engine::RunCalibration(std::span<const int32_t> ids, const ActivationProbe& probe) {
  for (int32_t id : ids) {
    if (id < 0 || id >= config_.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("calibration token id ", id, " is outside the vocabulary"));
    }
  }
  const auto run = [&]() -> absl::Status {
    std::vector<float> no_logits;
    const size_t window = static_cast<size_t>(max_context_);
    const size_t chunk = static_cast<size_t>(model_->max_batch_tokens());
    // Each window is a sequence of its own from position 0, like the start of a request.
    for (size_t w0 = 0; w0 < ids.size(); w0 += window) {
      const auto win = ids.subspan(w0, std::min(window, ids.size() - w0));
      BlockTable table(blocks_.get());
      BS_RETURN_IF_ERROR(table.Reserve(static_cast<int>(win.size())));
      for (size_t off = 0; off < win.size(); off += chunk) {
        const size_t n = std::min(chunk, win.size() - off);
        SequenceInput in{win.subspan(off, n), static_cast<int32_t>(off), table.blocks(), LogitRows::kNone};
        BS_RETURN_IF_ERROR(model_->Forward(std::span<const SequenceInput>(&in, 1), kv_cache_, &no_logits));
      }
    }
    return absl::OkStatus();
  };
  return scheduler_->RunExclusive([&] {
    model_->set_probe(probe);
    const absl::Status st = run();
    model_->set_probe(nullptr);
    return st;
  });
}

absl::StatusOr<CoreMap> Engine::LoadOrComputeCoreMap(const std::string& path, const CoreMapOptions& options,
                                                     bool* computed, absl::Status* write_status) {
  if (computed != nullptr) *computed = false;
  if (write_status != nullptr) *write_status = absl::OkStatus();
  if (std::filesystem::exists(path)) {
    absl::StatusOr<CoreMap> read = ReadCoreMapFor(path, options_.model_dir, config_);
    if (read.ok() && read->ratio_threshold != options.ratio) {
      read = absl::FailedPreconditionError(absl::StrCat("core map ", path, " was computed at ratio ",
                                                        read->ratio_threshold, ", not ", options.ratio));
    }
    return read;  // a map the operator named is used as is, or refused: never replaced
  }
  const std::vector<int32_t> ids = tokenizer_->Encode(DefaultCalibrationText(), /*add_special_tokens=*/true);
  BS_ASSIGN_OR_RETURN(CoreMap map, ComputeCoreMap(ids, options));
  if (computed != nullptr) *computed = true;
  const absl::Status written = WriteCoreMap(map, path);
  if (write_status != nullptr) *write_status = written;
  return map;
}

}  // namespace brickserve
