// What a caller asks of the engine for one generation, and what comes back.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "engine/model/lora.h"
#include "engine/modules/module_trace.h"
#include "engine/modules/router_policy.h"
#include "engine/sampling/sampler.h"
#include "engine/sampling/sampling_params.h"

namespace brickserve {

struct GenerationRequest {
  std::vector<int32_t> prompt_ids;
  SamplingParams sampling;
  int max_new_tokens = 128;
  std::vector<int32_t> stop_token_ids;   // besides EOS
  std::vector<std::string> stop_strings;  // generation ends before the first occurrence
  bool ignore_eos = false;
  bool logprobs = false;   // log-probability of each generated token
  int top_logprobs = 0;    // also the n most likely alternatives per generated token
  bool skip_special_tokens = true;
  // LoRA adapters to apply, in order, each with its weight. The request holds them until it ends.
  std::vector<LoraUse> loras;
  // Which FFN modules its tokens run (dense unless the engine has a module set and this asks).
  RouterPolicy router;
  bool module_trace = false;  // return the per-layer module usage in the result
  // Called on the scheduler thread with the raw logits (before penalties and temperature) that
  // each generated token is sampled from. Those steps sample on the host, which has the logits.
  std::function<void(std::span<const float>)> on_logits;
};

enum class FinishReason {
  kLength,     // max_new_tokens reached
  kStop,       // EOS, a stop token or a stop string
  kContext,    // the model's context is full
  kCancelled,  // the caller asked to stop
};

const char* FinishReasonName(FinishReason r);

struct GeneratedToken {
  int32_t id = 0;
  float logprob = 0.0f;             // set when logprobs or top_logprobs were asked
  std::vector<TokenLogprob> top;    // top_logprobs alternatives
};

// A piece of streamed output: the text that became final and the tokens produced since the last.
struct StreamPiece {
  std::string text;
  std::vector<GeneratedToken> tokens;
};

// Called for each piece; return false to cancel the generation.
using StreamCallback = std::function<bool(const StreamPiece&)>;

// Polled between prefill chunks and before every decode step; true stops the generation with
// FinishReason::kCancelled. Lets a caller stop a request whose output is not yet a piece.
using StopCheck = std::function<bool()>;

struct GenerationResult {
  std::vector<GeneratedToken> tokens;  // every generated token, including a final stop token
  std::string text;                    // decoded output, without the stop string
  FinishReason finish_reason = FinishReason::kLength;
  std::string matched_stop;            // the stop string that ended generation, if any
  int prompt_tokens = 0;
  int cached_prompt_tokens = 0;        // prompt tokens whose KV came from the prefix cache
  int completion_tokens = 0;
  int preemptions = 0;                 // times the request was preempted and recomputed
  double time_to_first_token_s = 0;
  double total_time_s = 0;
  ModuleTrace module_trace;            // when the request asked for it (and a module set is loaded)
  std::string module_policy;           // the router policy the trace ran under

  std::vector<int32_t> token_ids() const;
};

// Log-probabilities of given tokens (scoring).
struct ScoreResult {
  // For token i >= 1: log p(ids[i] | ids[0..i)), plus the top alternatives when asked.
  std::vector<GeneratedToken> tokens;
  double total_logprob = 0;
};

}  // namespace brickserve
