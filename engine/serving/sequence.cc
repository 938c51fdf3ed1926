#include "engine/serving/sequence.h"

#include <algorithm>

namespace brickserve {

Sequence::Sequence(uint64_t id, GenerationRequest request, SubmitOptions options, StreamCallback on_piece,
                   DoneCallback on_done, const Tokenizer& tokenizer, const std::vector<int32_t>& eos_ids,
                   int max_context)
    : id_(id),
      request_(std::move(request)),
      options_(std::move(options)),
      on_piece_(std::move(on_piece)),
      on_done_(std::move(on_done)),
      eos_ids_(eos_ids),
      max_context_(max_context),
      arrival_(Clock::now()),
      tokens_(request_.prompt_ids),
      sampler_(request_.sampling, request_.prompt_ids),
      decoder_(tokenizer, request_.skip_special_tokens),
      stops_(request_.stop_strings) {
  decoder_.SetPrefix(request_.prompt_ids);
  result_.prompt_tokens = prompt_len();
}

bool Sequence::IsStopToken(int32_t id) const {
  if (!request_.ignore_eos && std::find(eos_ids_.begin(), eos_ids_.end(), id) != eos_ids_.end()) return true;
  return std::find(request_.stop_token_ids.begin(), request_.stop_token_ids.end(), id) !=
         request_.stop_token_ids.end();
}

bool Sequence::AcceptLogits(std::span<float> logits) {
  const bool want_logprobs = request_.logprobs || request_.top_logprobs > 0;
  if (request_.on_logits) request_.on_logits(logits);  // before the sampler changes them
  GeneratedToken tok;
  std::vector<float> raw;
  if (want_logprobs) {
    // Log-probabilities of the model's own distribution, before penalties and temperature.
    if (request_.top_logprobs > 0) tok.top = TopLogprobs(logits, request_.top_logprobs);
    raw.assign(logits.begin(), logits.end());
  }
  tok.id = sampler_.Sample(logits);
  if (want_logprobs) tok.logprob = LogprobOf(raw, tok.id);
  return AcceptToken(tok);
}

bool Sequence::needs_host_logits() const {
  return request_.logprobs || request_.top_logprobs > 0 || request_.on_logits != nullptr;
}

void Sequence::DeviceSampleRow(int vocab, std::vector<PenaltyToken>* penalties, SampleRow* row) {
  sampler_.Row(vocab, penalties, row);
}

bool Sequence::AcceptSampled(int32_t id) {
  sampler_.Record(id);
  GeneratedToken tok;
  tok.id = id;
  return AcceptToken(tok);
}

bool Sequence::AcceptToken(const GeneratedToken& tok) {
  const Clock::time_point now = Clock::now();
  if (result_.tokens.empty()) result_.time_to_first_token_s = Seconds(now - arrival_);
  last_token_time_ = now;
  result_.tokens.push_back(tok);
  tokens_.push_back(tok.id);
  piece_.tokens.push_back(tok);

  bool finished = false;
  const bool stop_token = IsStopToken(tok.id);
  std::string text = stop_token ? std::string() : decoder_.Add(tok.id);
  if (stop_token) {
    result_.finish_reason = FinishReason::kStop;
    finished = true;
  } else if (static_cast<int>(result_.tokens.size()) >= request_.max_new_tokens) {
    result_.finish_reason = FinishReason::kLength;
    finished = true;
  } else if (static_cast<int>(tokens_.size()) >= max_context_) {
    result_.finish_reason = FinishReason::kContext;
    finished = true;
  }
  if (finished && !stop_token) text += decoder_.Flush();
  std::string out = stops_.Push(text);
  if (stops_.matched()) {
    result_.finish_reason = FinishReason::kStop;
    result_.matched_stop = *stops_.matched();
    finished = true;
  } else if (finished) {
    out += stops_.Flush();
  }
  piece_.text += out;
  result_.text += out;
  if (on_piece_ && (!piece_.text.empty() || finished)) {
    if (!on_piece_(piece_)) {
      result_.finish_reason = FinishReason::kCancelled;
      finished = true;
    }
    piece_ = StreamPiece();
  }
  return finished;
}

void Sequence::Deliver(const absl::Status& error) {
  result_.completion_tokens = static_cast<int>(result_.tokens.size());
  result_.preemptions = preemptions;
  result_.total_time_s = Seconds(Clock::now() - arrival_);
  if (request_.module_trace) {
    result_.module_trace = module_usage_;
    result_.module_policy = RouterPolicyToString(request_.router);
  }
  if (!on_done_) return;
  if (error.ok()) {
    on_done_(std::move(result_));
  } else {
    on_done_(error);
  }
}

}  // namespace brickserve
