#include "server/request_convert.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace brickserve {
namespace {

absl::Status Invalid(std::string message) { return absl::InvalidArgumentError(std::move(message)); }

}  // namespace

bool IsValidUtf8(std::string_view s) {
  static constexpr uint32_t kSmallest[] = {0, 0, 0x80, 0x800, 0x10000};  // by length: no overlongs
  size_t i = 0;
  while (i < s.size()) {
    const auto lead = static_cast<unsigned char>(s[i]);
    int len = 1;
    uint32_t cp = lead;
    if (lead >= 0x80) {
      if ((lead & 0xE0) == 0xC0) {
        len = 2, cp = lead & 0x1F;
      } else if ((lead & 0xF0) == 0xE0) {
        len = 3, cp = lead & 0x0F;
      } else if ((lead & 0xF8) == 0xF0) {
        len = 4, cp = lead & 0x07;
      } else {
        return false;  // a continuation byte or 0xF8..0xFF where a character must start
      }
      if (i + len > s.size()) return false;
      for (int k = 1; k < len; ++k) {
        const auto next = static_cast<unsigned char>(s[i + k]);
        if ((next & 0xC0) != 0x80) return false;
        cp = (cp << 6) | (next & 0x3F);
      }
      if (cp < kSmallest[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    }
    i += len;
  }
  return true;
}

absl::Status CheckBricksAndRouter(const v1::GenerateRequest& req, const Limits& limits) {
  if (req.bricks_size() > limits.max_bricks_per_request) {
    return Invalid(absl::StrCat("bricks: ", req.bricks_size(), " bricks; at most ", limits.max_bricks_per_request,
                                " are allowed (limits.max_bricks_per_request)"));
  }
  for (int i = 0; i < req.bricks_size(); ++i) {
    if (auto s = CheckBrickName(req.bricks(i), absl::StrCat("bricks[", i, "]")); !s.ok()) return s;
    for (int j = 0; j < i; ++j) {
      if (req.bricks(j) == req.bricks(i)) {
        return Invalid(absl::StrCat("bricks[", i, "] = \"", req.bricks(i), "\" repeats bricks[", j,
                                    "]: name each brick once and give it a weight"));
      }
    }
  }
  if (req.brick_weights_size() != 0 && req.brick_weights_size() != req.bricks_size()) {
    return Invalid(absl::StrCat("brick_weights has ", req.brick_weights_size(), " weights for ", req.bricks_size(),
                                " bricks: give none (all 1) or one per brick"));
  }
  for (int i = 0; i < req.brick_weights_size(); ++i) {
    const float w = req.brick_weights(i);
    if (!std::isfinite(w) || w < -kMaxBrickWeight || w > kMaxBrickWeight) {
      return Invalid(absl::StrCat("brick_weights[", i, "] = ", w, " is out of range: must be in [", -kMaxBrickWeight,
                                  ", ", kMaxBrickWeight, "]"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<RouterPolicy> ToRouterPolicy(const v1::RouterPolicy& in, const RouterPolicy& server_default) {
  RouterPolicy p;
  switch (in.policy()) {
    case v1::RouterPolicy::POLICY_UNSPECIFIED: return server_default;
    case v1::RouterPolicy::POLICY_DENSE: return p;
    case v1::RouterPolicy::POLICY_TOP_K: p.mode = RouterMode::kTopK; break;
    case v1::RouterPolicy::POLICY_DENSITY: p.mode = RouterMode::kDensity; break;
    default: return Invalid(absl::StrCat("router.policy = ", in.policy(), " is not a known policy"));
  }
  p.k = in.k();
  p.density = in.density();
  switch (in.selector()) {
    case v1::RouterPolicy::SELECTOR_UNSPECIFIED:
    case v1::RouterPolicy::SELECTOR_ROUTER: p.selector = ModuleSelector::kRouter; break;
    case v1::RouterPolicy::SELECTOR_THRESHOLD: p.selector = ModuleSelector::kThreshold; break;
    case v1::RouterPolicy::SELECTOR_ORACLE: p.selector = ModuleSelector::kOracle; break;
    case v1::RouterPolicy::SELECTOR_RANDOM: p.selector = ModuleSelector::kRandom; break;
    default: return Invalid(absl::StrCat("router.selector = ", in.selector(), " is not a known selector"));
  }
  // The range checks (router.k against the module count, router.density in (0, 1]) are the
  // engine's, with the module set at hand (Engine::Validate).
  return p;
}

void ToProto(const RouterPolicy& p, v1::RouterPolicy* out) {
  out->set_policy(p.mode == RouterMode::kDense  ? v1::RouterPolicy::POLICY_DENSE
                  : p.mode == RouterMode::kTopK ? v1::RouterPolicy::POLICY_TOP_K
                                                : v1::RouterPolicy::POLICY_DENSITY);
  out->set_k(p.k);
  out->set_density(p.density);
  out->set_selector(p.selector == ModuleSelector::kThreshold ? v1::RouterPolicy::SELECTOR_THRESHOLD
                    : p.selector == ModuleSelector::kOracle  ? v1::RouterPolicy::SELECTOR_ORACLE
                    : p.selector == ModuleSelector::kRandom  ? v1::RouterPolicy::SELECTOR_RANDOM
                                                             : v1::RouterPolicy::SELECTOR_ROUTER);
}

ModuleTrace ModuleTraceFromProto(const v1::ModuleUsage& in) {
  ModuleTrace t;
  t.Reset(in.layers_size(), in.num_modules());
  for (int l = 0; l < in.layers_size(); ++l) {
    const auto& counts = in.layers(l).token_counts();
    for (int m = 0; m < std::min(in.num_modules(), counts.size()); ++m) t.at(l, m) = counts[m];
  }
  t.tokens = in.tokens();
  // The wire carries the density, not the neuron counts: keep the ratio.
  t.neurons_total = 1000000;
  t.neurons_computed = static_cast<uint64_t>(in.density() * 1000000 + 0.5);
  return t;
}

void FillModuleUsage(const ModuleTrace& t, const std::string& policy, v1::ModuleUsage* out) {
  out->set_num_modules(t.num_modules);
  out->set_tokens(t.tokens);
  out->set_density(t.density());
  out->set_policy(policy);
  for (int l = 0; l < t.num_layers; ++l) {
    auto* layer = out->add_layers();
    for (int m = 0; m < t.num_modules; ++m) layer->add_token_counts(t.at(l, m));
  }
}

absl::Status AttachBricks(const v1::GenerateRequest& req, BrickRegistry* registry, GenerationRequest* out,
                          std::vector<v1::AppliedBrick>* applied) {
  if (req.bricks_size() == 0) return absl::OkStatus();
  if (registry == nullptr) return absl::NotFoundError(absl::StrCat("brick \"", req.bricks(0), "\" is not loaded"));
  const std::vector<std::string> names(req.bricks().begin(), req.bricks().end());
  auto bricks = registry->Acquire(names);
  if (!bricks.ok()) return bricks.status();
  for (size_t i = 0; i < bricks->size(); ++i) {
    const float weight = req.brick_weights_size() > 0 ? req.brick_weights(static_cast<int>(i)) : 1.0f;
    if (auto s = (*bricks)[i]->Apply(weight, *out); !s.ok()) return s;
    if (applied != nullptr) {
      v1::AppliedBrick& a = applied->emplace_back();
      a.set_name(names[i]);
      a.set_version((*bricks)[i]->version());
      a.set_weight(weight);
    }
  }
  return absl::OkStatus();
}

absl::Status CheckTokenIds(std::span<const int32_t> ids, int vocab_size, const char* field) {
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab_size) {
      return Invalid(absl::StrCat(field, "[", i, "] = ", ids[i], " is outside the vocabulary [0, ", vocab_size, ")"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<GenerationRequest> ToEngineRequest(const v1::GenerateRequest& req, const Engine& engine,
                                                  const Limits& limits, BrickRegistry* bricks,
                                                  std::vector<v1::AppliedBrick>* applied) {
  if (auto s = CheckBricksAndRouter(req, limits); !s.ok()) return s;
  if (req.priority() < -kMaxPriority || req.priority() > kMaxPriority) {
    return Invalid(absl::StrCat("priority = ", req.priority(), " is out of range: must be in [", -kMaxPriority, ", ",
                                kMaxPriority, "]"));
  }
  const int vocab = engine.config().vocab_size;
  GenerationRequest out;

  switch (req.prompt_case()) {
    case v1::GenerateRequest::kText: {
      if (req.text().empty()) return Invalid("text: the prompt is empty");
      if (!IsValidUtf8(req.text())) return Invalid("text is not valid UTF-8");
      out.prompt_ids = engine.tokenizer().Encode(req.text(), !req.has_add_special_tokens() || req.add_special_tokens());
      break;
    }
    case v1::GenerateRequest::kTokenIds: {
      const auto& ids = req.token_ids().ids();
      if (ids.empty()) return Invalid("token_ids.ids: the prompt is empty");
      out.prompt_ids.assign(ids.begin(), ids.end());
      if (auto s = CheckTokenIds(out.prompt_ids, vocab, "token_ids.ids"); !s.ok()) return s;
      break;
    }
    default:
      return Invalid("prompt: set either text or token_ids");
  }
  // A text prompt can encode to nothing (e.g. only whitespace that the tokenizer drops, no BOS).
  if (out.prompt_ids.empty()) return Invalid("text: the prompt encodes to no tokens");
  const int n = static_cast<int>(out.prompt_ids.size());
  if (n > limits.max_prompt_tokens) {
    return Invalid(absl::StrCat("prompt has ", n, " tokens; at most ", limits.max_prompt_tokens,
                                " are allowed (limits.max_prompt_tokens; the context holds ", engine.max_context(),
                                " including the output)"));
  }

  out.max_new_tokens = req.has_max_new_tokens() ? req.max_new_tokens() : limits.default_max_new_tokens;
  if (out.max_new_tokens < 1 || out.max_new_tokens > limits.max_new_tokens) {
    return Invalid(absl::StrCat("max_new_tokens = ", out.max_new_tokens, " is out of range: must be in [1, ",
                                limits.max_new_tokens, "]"));
  }

  const auto& sp = req.sampling();
  out.sampling.temperature = sp.temperature();
  out.sampling.top_k = sp.top_k();
  out.sampling.top_p = sp.has_top_p() ? sp.top_p() : 1.0f;
  out.sampling.min_p = sp.min_p();
  out.sampling.repetition_penalty = sp.has_repetition_penalty() ? sp.repetition_penalty() : 1.0f;
  out.sampling.presence_penalty = sp.presence_penalty();
  out.sampling.frequency_penalty = sp.frequency_penalty();
  if (sp.has_seed()) out.sampling.seed = sp.seed();

  if (req.stop_size() > limits.max_stop_strings) {
    return Invalid(absl::StrCat("stop: ", req.stop_size(), " stop strings; at most ", limits.max_stop_strings,
                                " are allowed (limits.max_stop_strings)"));
  }
  for (int i = 0; i < req.stop_size(); ++i) {
    const std::string& s = req.stop(i);
    if (s.empty()) return Invalid(absl::StrCat("stop[", i, "] is empty"));
    if (static_cast<int>(s.size()) > limits.max_stop_string_bytes) {
      return Invalid(absl::StrCat("stop[", i, "] has ", s.size(), " bytes; at most ", limits.max_stop_string_bytes,
                                  " are allowed (limits.max_stop_string_bytes)"));
    }
    // Generated text is UTF-8, so a stop string that is not could never match: refuse it.
    if (!IsValidUtf8(s)) return Invalid(absl::StrCat("stop[", i, "] is not valid UTF-8"));
    out.stop_strings.push_back(s);
  }
  out.stop_token_ids.assign(req.stop_token_ids().begin(), req.stop_token_ids().end());
  if (auto s = CheckTokenIds(out.stop_token_ids, vocab, "stop_token_ids"); !s.ok()) return s;

  out.ignore_eos = req.ignore_eos();
  out.logprobs = req.logprobs();
  out.top_logprobs = req.top_logprobs();
  if (out.top_logprobs < 0 || out.top_logprobs > limits.max_top_logprobs) {
    return Invalid(absl::StrCat("top_logprobs = ", out.top_logprobs, " is out of range: must be in [0, ",
                                limits.max_top_logprobs, "]"));
  }
  out.skip_special_tokens = !req.has_skip_special_tokens() || req.skip_special_tokens();
  auto router = ToRouterPolicy(req.router(), limits.default_router);
  if (!router.ok()) return router.status();
  out.router = *router;
  out.module_trace = req.module_trace();

  // Last, once the request is known to be valid: only admitted requests count as served by a brick.
  if (auto s = AttachBricks(req, bricks, &out, applied); !s.ok()) return s;
  // The engine's checks: context length, vocabulary, sampling ranges, adapters.
  if (auto s = engine.Validate(out); !s.ok()) return s;
  return out;
}

v1::FinishReason ToProto(FinishReason reason) {
  switch (reason) {
    case FinishReason::kLength: return v1::FINISH_REASON_LENGTH;
    case FinishReason::kStop: return v1::FINISH_REASON_STOP;
    case FinishReason::kContext: return v1::FINISH_REASON_CONTEXT;
    case FinishReason::kCancelled: return v1::FINISH_REASON_CANCELLED;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

void FillToken(const GeneratedToken& token, bool with_logprobs, v1::Token* out) {
  out->set_id(token.id);
  if (!with_logprobs) return;
  out->set_logprob(token.logprob);
  for (const auto& alt : token.top) {
    auto* t = out->add_top_logprobs();
    t->set_id(alt.id);
    t->set_logprob(alt.logprob);
  }
}

void FillUsage(const GenerationResult& r, v1::Usage* out) {
  out->set_prompt_tokens(r.prompt_tokens);
  out->set_completion_tokens(r.completion_tokens);
  out->set_time_to_first_token_s(r.time_to_first_token_s);
  out->set_total_time_s(r.total_time_s);
  out->set_cached_prompt_tokens(r.cached_prompt_tokens);
  out->set_preemptions(r.preemptions);
  if (!r.module_trace.empty()) FillModuleUsage(r.module_trace, r.module_policy, out->mutable_modules());
}

void FillResponse(const GenerationResult& r, bool with_logprobs, v1::GenerateResponse* out) {
  out->set_text(r.text);
  for (const auto& t : r.tokens) FillToken(t, with_logprobs, out->add_tokens());
  out->set_finish_reason(ToProto(r.finish_reason));
  out->set_matched_stop(r.matched_stop);
  FillUsage(r, out->mutable_usage());
}

void FillPiece(const StreamPiece& piece, bool with_logprobs, v1::GeneratePiece* out) {
  out->set_text(piece.text);
  for (const auto& t : piece.tokens) FillToken(t, with_logprobs, out->add_tokens());
}

void FillFinal(const GenerationResult& r, v1::GenerateFinal* out) {
  out->set_finish_reason(ToProto(r.finish_reason));
  out->set_matched_stop(r.matched_stop);
  FillUsage(r, out->mutable_usage());
}

}  // namespace brickserve
