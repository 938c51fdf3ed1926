// One generation request inside the scheduler: its tokens, its KV blocks, and what turns each new
// row of logits into streamed output (sampling, incremental decoding, stop conditions).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/generate/generation.h"
#include "engine/generate/stop_matcher.h"
#include "engine/sampling/sampler.h"
#include "engine/tokenizer/tokenizer.h"

namespace brickserve {

// How a caller wants a submitted request treated.
struct SubmitOptions {
  int priority = 0;        // higher is scheduled (and kept) first; ties go by arrival
  StopCheck should_stop;   // polled at every step, while queued and while running
  // Requests share cached prompt KV only within one namespace (bricks change the KV).
  uint64_t prefix_namespace = 0;
};

// Called exactly once per accepted request, on the engine's scheduler thread.
using DoneCallback = std::function<void(absl::StatusOr<GenerationResult>)>;

using Clock = std::chrono::steady_clock;
inline double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

class Sequence {
 public:
  Sequence(uint64_t id, GenerationRequest request, SubmitOptions options, StreamCallback on_piece,
           DoneCallback on_done, const Tokenizer& tokenizer, const std::vector<int32_t>& eos_ids, int max_context);

  uint64_t id() const { return id_; }
  int priority() const { return options_.priority; }
  const SubmitOptions& options() const { return options_; }
  Clock::time_point arrival() const { return arrival_; }
  int prompt_len() const { return static_cast<int>(request_.prompt_ids.size()); }
  const std::vector<LoraUse>& loras() const { return request_.loras; }
  const RouterPolicy& router() const { return request_.router; }
  // The modules its tokens used so far (recomputed tokens after a preemption count again).
  ModuleTrace& module_usage() { return module_usage_; }

  // Prompt then generated tokens. The KV of tokens()[0, num_computed) is in the cache; the rest
  // (the prompt, or after a preemption everything, or the last sampled token) still has to run.
  const std::vector<int32_t>& tokens() const { return tokens_; }
  int num_computed = 0;
  int pending() const { return static_cast<int>(tokens_.size()) - num_computed; }
  // KV blocks covering positions [0, blocks.size() * block_size). block_hashes[i] is the chain
  // hash of full block i, for the blocks already offered to the prefix cache.
  std::vector<int32_t> blocks;
  std::vector<uint64_t> block_hashes;
  int preemptions = 0;

  // Consumes the logits of the last token: samples the next one, streams the text that became
  // final. Returns true when the request is finished (its result is then ready to deliver).
  bool AcceptLogits(std::span<float> logits);
  // Sampling on the device instead: the request's row for Device::SampleTokens (draws this step's
  // uniform from the request's RNG), then the token the device picked. Not for requests that need
  // the logits on the host (logprobs, on_logits).
  bool needs_host_logits() const;
  void DeviceSampleRow(int vocab, std::vector<PenaltyToken>* penalties, SampleRow* row);
  bool AcceptSampled(int32_t id);
  // Whether the caller asked to stop (polled check).
  bool StopRequested() const { return options_.should_stop && options_.should_stop(); }
  // Ends the request as cancelled (no more output).
  void MarkCancelled() { result_.finish_reason = FinishReason::kCancelled; }
  void AddCachedPromptTokens(int n) { result_.cached_prompt_tokens += n; }
  // Hands the result (or `error`) to the caller. Call once.
  void Deliver(const absl::Status& error = absl::OkStatus());

  const GenerationResult& result() const { return result_; }
  Clock::time_point last_token_time() const { return last_token_time_; }

 private:
  // Records a sampled token: streaming text, stop conditions. True when the request is finished.
  bool AcceptToken(const GeneratedToken& tok);
  bool IsStopToken(int32_t id) const;

  const uint64_t id_;
  const GenerationRequest request_;
  const SubmitOptions options_;
  const StreamCallback on_piece_;
  const DoneCallback on_done_;
  const std::vector<int32_t>& eos_ids_;
  const int max_context_;
  const Clock::time_point arrival_;
  std::vector<int32_t> tokens_;
  Sampler sampler_;
  IncrementalDecoder decoder_;
  StopMatcher stops_;
  GenerationResult result_;
  ModuleTrace module_usage_;
  StreamPiece piece_;
  Clock::time_point last_token_time_;
};

}  // namespace brickserve
