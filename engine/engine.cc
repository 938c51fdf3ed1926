#include "engine/engine.h"

#include <algorithm>
#include <chrono>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "engine/generate/stop_matcher.h"
#include "engine/util/status_macros.h"

namespace brickserve {
namespace {

using Clock = std::chrono::steady_clock;
double Seconds(Clock::time_point since) { return std::chrono::duration<double>(Clock::now() - since).count(); }

}  // namespace

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
  if (options.max_batch_tokens <= 0 || options.kv_block_size <= 0) {
    return absl::InvalidArgumentError("max_batch_tokens and kv_block_size must be positive");
  }
  BS_ASSIGN_OR_RETURN(e->device_, CreateDevice(options.device));
  BS_ASSIGN_OR_RETURN(e->model_, LlamaModel::Load(options.model_dir, e->config_, e->device_.get(),
                                                  options.max_batch_tokens));
  const int kv_tokens = options.kv_cache_tokens > 0 ? options.kv_cache_tokens : e->max_context_;
  KvCacheSpec spec;
  spec.num_layers = e->config_.num_layers;
  spec.num_kv_heads = e->config_.num_kv_heads;
  spec.head_dim = e->config_.head_dim;
  spec.block_size = options.kv_block_size;
  spec.num_blocks = (kv_tokens + spec.block_size - 1) / spec.block_size;
  BS_ASSIGN_OR_RETURN(e->kv_cache_, e->device_->AllocKvCache(spec));
  e->blocks_ = std::make_unique<BlockAllocator>(spec.num_blocks);

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
  return ValidateSamplingParams(r.sampling, config_.vocab_size);
}

bool Engine::IsStopToken(const GenerationRequest& r, int32_t id) const {
  if (!r.ignore_eos && std::find(eos_ids_.begin(), eos_ids_.end(), id) != eos_ids_.end()) return true;
  return std::find(r.stop_token_ids.begin(), r.stop_token_ids.end(), id) != r.stop_token_ids.end();
}

absl::StatusOr<bool> Engine::Prefill(std::span<const int32_t> ids, int start, BlockTable& table, bool all_logits,
                                     std::vector<float>* logits, const StopCheck& should_stop) {
  BS_RETURN_IF_ERROR(table.Reserve(start + static_cast<int>(ids.size())));
  logits->clear();
  std::vector<float> chunk_logits;
  const size_t chunk = static_cast<size_t>(model_->max_batch_tokens());
  for (size_t off = 0; off < ids.size(); off += chunk) {
    if (should_stop && should_stop()) return false;
    const size_t n = std::min(chunk, ids.size() - off);
    SequenceInput in{ids.subspan(off, n), start + static_cast<int32_t>(off), table.blocks(), all_logits};
    BS_RETURN_IF_ERROR(model_->Forward(std::span<const SequenceInput>(&in, 1), kv_cache_, &chunk_logits));
    if (all_logits) {
      logits->insert(logits->end(), chunk_logits.begin(), chunk_logits.end());
    } else if (off + n == ids.size()) {
      logits->swap(chunk_logits);
    }
  }
  return true;
}

absl::StatusOr<GenerationResult> Engine::Generate(const GenerationRequest& request, const StreamCallback& on_piece,
                                                  const StopCheck& should_stop) {
  BS_RETURN_IF_ERROR(Validate(request));
  std::lock_guard<std::mutex> lock(mu_);
  const auto start_time = Clock::now();
  GenerationResult result;
  result.prompt_tokens = static_cast<int>(request.prompt_ids.size());
  const bool want_logprobs = request.logprobs || request.top_logprobs > 0;

  BlockTable table(blocks_.get(), kv_cache_.spec.block_size);
  std::vector<float> logits;
  BS_ASSIGN_OR_RETURN(const bool prefilled, Prefill(request.prompt_ids, 0, table, false, &logits, should_stop));
  if (!prefilled) {
    result.finish_reason = FinishReason::kCancelled;
    result.total_time_s = Seconds(start_time);
    return result;
  }

  Sampler sampler(request.sampling, request.prompt_ids);
  IncrementalDecoder decoder(*tokenizer_, request.skip_special_tokens);
  decoder.SetPrefix(request.prompt_ids);
  StopMatcher stops(request.stop_strings);
  int pos = result.prompt_tokens;
  StreamPiece piece;
  bool finished = false;
  while (!finished) {
    GeneratedToken tok;
    if (want_logprobs) {
      // Log-probabilities of the model's own distribution, before penalties and temperature.
      if (request.top_logprobs > 0) tok.top = TopLogprobs(logits, request.top_logprobs);
    }
    std::vector<float> raw;
    if (want_logprobs) raw = logits;
    tok.id = sampler.Sample(logits);
    if (want_logprobs) tok.logprob = LogprobOf(raw, tok.id);
    result.tokens.push_back(tok);
    if (result.tokens.size() == 1) result.time_to_first_token_s = Seconds(start_time);
    piece.tokens.push_back(tok);

    const bool stop_token = IsStopToken(request, tok.id);
    std::string text = stop_token ? std::string() : decoder.Add(tok.id);
    if (stop_token) {
      result.finish_reason = FinishReason::kStop;
      finished = true;
    } else if (static_cast<int>(result.tokens.size()) >= request.max_new_tokens) {
      result.finish_reason = FinishReason::kLength;
      finished = true;
    } else if (pos + 1 >= max_context_) {
      result.finish_reason = FinishReason::kContext;
      finished = true;
    }
    if (finished && !stop_token) text += decoder.Flush();
    std::string out = stops.Push(text);
    if (stops.matched()) {
      result.finish_reason = FinishReason::kStop;
      result.matched_stop = *stops.matched();
      finished = true;
    } else if (finished) {
      out += stops.Flush();
    }
    piece.text += out;
    result.text += out;
    if (on_piece && (!piece.text.empty() || finished)) {
      if (!on_piece(piece)) {
        result.finish_reason = FinishReason::kCancelled;
        finished = true;
      }
      piece = StreamPiece();
    }
    if (finished) break;
    if (should_stop && should_stop()) {
      result.finish_reason = FinishReason::kCancelled;
      break;
    }
    // Decode step: run the sampled token.
    BS_RETURN_IF_ERROR(table.Reserve(pos + 1));
    const int32_t id = tok.id;
    SequenceInput in{std::span<const int32_t>(&id, 1), pos, table.blocks(), false};
    BS_RETURN_IF_ERROR(model_->Forward(std::span<const SequenceInput>(&in, 1), kv_cache_, &logits));
    ++pos;
  }
  result.completion_tokens = static_cast<int>(result.tokens.size());
  result.total_time_s = Seconds(start_time);
  return result;
}

absl::StatusOr<ScoreResult> Engine::Score(std::span<const int32_t> ids, int top_logprobs) {
  if (ids.size() < 2) return absl::InvalidArgumentError("scoring needs at least two tokens");
  if (static_cast<int>(ids.size()) > max_context_) {
    return absl::InvalidArgumentError(absl::StrCat("scoring ", ids.size(), " tokens exceeds the context of ", max_context_));
  }
  for (int32_t id : ids) {
    if (id < 0 || id >= config_.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", id, " is outside the vocabulary"));
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  BlockTable table(blocks_.get(), kv_cache_.spec.block_size);
  std::vector<float> logits;
  // The last token's logits are not needed: they would score a token that is not there.
  BS_RETURN_IF_ERROR(Prefill(ids.first(ids.size() - 1), 0, table, true, &logits).status());
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

}  // namespace brickserve
