#include "server/cli/client_commands.h"

#include <chrono>
#include <iostream>
#include <memory>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "brickserve/v1/inference.grpc.pb.h"
#include "engine/cli/flags.h"
#include "engine/cli/module_usage_report.h"
#include "engine/cli/modules_command.h"
#include "grpcpp/grpcpp.h"
#include "server/config.h"
#include "server/request_convert.h"
#include "server/status_mapping.h"

namespace brickserve {
namespace {

absl::Status ParseIds(const std::string& flag, const std::string& text, google::protobuf::RepeatedField<int32_t>* out) {
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int32_t id = 0;
    if (!absl::SimpleAtoi(part, &id)) {
      return absl::InvalidArgumentError(absl::StrCat("--", flag, ": \"", part, "\" is not a token id"));
    }
    out->Add(id);
  }
  return absl::OkStatus();
}

int Fail(const char* command, const grpc::Status& status) {
  std::cerr << command << ": " << GrpcCodeName(status.error_code()) << ": " << status.error_message() << "\n";
  return 1;
}

int BadFlags(const char* command, const absl::Status& status) {
  std::cerr << command << ": " << status.message() << "\n";
  return 2;
}

void SetTimeout(grpc::ClientContext* context, float timeout_s) {
  if (timeout_s > 0) {
    context->set_deadline(std::chrono::system_clock::now() +
                          std::chrono::microseconds(static_cast<int64_t>(timeout_s * 1e6)));
  }
}

std::unique_ptr<v1::InferenceService::Stub> Connect(const std::string& address) {
  return v1::InferenceService::NewStub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
}

void PrintTokens(const google::protobuf::RepeatedPtrField<v1::Token>& tokens, bool show_ids, bool show_logprobs) {
  if (show_ids) {
    std::vector<int32_t> ids;
    for (const auto& t : tokens) ids.push_back(t.id());
    std::cout << "ids: " << absl::StrJoin(ids, ",") << "\n";
  }
  if (!show_logprobs) return;
  for (const auto& t : tokens) {
    std::cout << t.id() << " " << t.logprob() << " |";
    for (const auto& alt : t.top_logprobs()) std::cout << " " << alt.id() << ":" << alt.logprob();
    std::cout << "\n";
  }
}

void PrintUsage(v1::FinishReason reason, const std::string& matched_stop, const v1::Usage& u) {
  std::cout.flush();  // keep stdout's text before this on a terminal
  std::cerr << absl::StrCat("finish: ", v1::FinishReason_Name(reason),
                            matched_stop.empty() ? "" : absl::StrCat(" (stop \"", matched_stop, "\")"),
                            "\nprompt tokens: ", u.prompt_tokens(), "  generated: ", u.completion_tokens(),
                            "\ntime to first token: ", u.time_to_first_token_s() * 1e3, " ms  total: ",
                            u.total_time_s() * 1e3, " ms\n");
  for (const auto& b : u.bricks()) {
    std::cerr << "brick: " << b.name() << " version " << b.version() << " weight " << b.weight() << "\n";
  }
  if (u.has_modules()) {
    ModuleUsageReportOptions o;
    o.title = absl::StrCat("module trace: ", u.modules().policy());
    std::cerr << FormatModuleUsageReport(ModuleTraceFromProto(u.modules()), o);
  }
}

// "dense", "top_k:K", "density:D[:selector]" (ParseRouterPolicy's spelling) on the wire.
absl::Status SetRouter(const std::string& spec, v1::RouterPolicy* out) {
  auto p = ParseRouterPolicy(spec);
  if (!p.ok()) return absl::InvalidArgumentError(absl::StrCat("--router: ", p.status().message()));
  ToProto(*p, out);
  return absl::OkStatus();
}

// "name" or "name:weight" (the weight given for every brick, or for none).
absl::Status AddBricks(const std::vector<std::string>& specs, v1::GenerateRequest* req) {
  bool any_weight = false;
  for (const std::string& spec : specs) any_weight |= spec.find(':') != std::string::npos;
  for (const std::string& spec : specs) {
    const size_t colon = spec.rfind(':');
    req->add_bricks(spec.substr(0, colon));
    if (!any_weight) continue;
    float w = 1.0f;
    if (colon != std::string::npos && !absl::SimpleAtof(spec.substr(colon + 1), &w)) {
      return absl::InvalidArgumentError(absl::StrCat("--brick ", spec, ": the weight is not a number"));
    }
    req->add_brick_weights(w);
  }
  return absl::OkStatus();
}

}  // namespace

int GenerateCommand(int argc, char** argv, int first) {
  constexpr char kCommand[] = "brickserve generate";
  std::string server = kDefaultListenAddress, prompt, prompt_ids, router;
  std::vector<std::string> stops, stop_ids, bricks;
  bool no_special = false, ignore_eos = false, logprobs = false, unary = false, show_ids = false, stats = false,
       module_trace = false;
  int max_new_tokens = 0, top_k = 0, top_logprobs = 0;
  float temperature = 0, top_p = 1, min_p = 0, repetition = 1, presence = 0, frequency = 0, timeout_s = 0;
  std::optional<uint64_t> seed;
  FlagSet flags(kCommand, "Generate text by calling a brickserve server (GenerateStream, or Generate with --unary).");
  flags.String("server", &server, "server address host:port");
  flags.String("prompt", &prompt, "prompt text");
  flags.String("prompt-ids", &prompt_ids, "comma-separated prompt token ids instead of text");
  flags.Bool("no-special-tokens", &no_special, "do not add BOS/EOS to a text prompt");
  flags.Int("max-new-tokens", &max_new_tokens, "tokens to generate at most (0 = the server's default)");
  flags.Float("temperature", &temperature, "0 = greedy");
  flags.Int("top-k", &top_k, "keep the k most likely tokens (0 = off)");
  flags.Float("top-p", &top_p, "nucleus sampling mass (1 = off)");
  flags.Float("min-p", &min_p, "drop tokens below min_p * p_max (0 = off)");
  flags.Float("repetition-penalty", &repetition, "HF repetition penalty (1 = off)");
  flags.Float("presence-penalty", &presence, "OpenAI presence penalty");
  flags.Float("frequency-penalty", &frequency, "OpenAI frequency penalty");
  flags.OptionalU64("seed", &seed, "random seed (same seed, same output)");
  flags.List("stop", &stops, "stop string");
  flags.List("stop-token-id", &stop_ids, "token id that ends generation (besides EOS)");
  flags.Bool("ignore-eos", &ignore_eos, "keep generating past EOS");
  flags.Bool("logprobs", &logprobs, "print each token's log-probability");
  flags.Int("top-logprobs", &top_logprobs, "also print the n most likely tokens per step");
  flags.List("brick", &bricks, "brick to apply, NAME or NAME:WEIGHT (repeat for several)");
  flags.String("router", &router, "FFN modules: dense, top_k:K or density:D[:threshold|oracle|random] (default: server's)");
  flags.Bool("module-trace", &module_trace, "print which modules each layer used (implies --stats)");
  flags.Bool("unary", &unary, "one Generate call instead of streaming");
  flags.Bool("show-ids", &show_ids, "print the generated token ids");
  flags.Bool("stats", &stats, "print the finish reason and usage to stderr");
  flags.Float("timeout", &timeout_s, "deadline in seconds (0 = none)");
  if (absl::Status s = flags.Parse(argc, argv, first); !s.ok()) return BadFlags(kCommand, s);
  if (flags.help_requested()) {
    std::cout << flags.Usage();
    return 0;
  }

  v1::GenerateRequest req;
  if (!prompt_ids.empty()) {
    if (auto s = ParseIds("prompt-ids", prompt_ids, req.mutable_token_ids()->mutable_ids()); !s.ok()) {
      return BadFlags(kCommand, s);
    }
  } else {
    req.set_text(prompt);
    if (no_special) req.set_add_special_tokens(false);
  }
  if (max_new_tokens != 0) req.set_max_new_tokens(max_new_tokens);
  auto* sp = req.mutable_sampling();
  sp->set_temperature(temperature);
  sp->set_top_k(top_k);
  if (top_p != 1) sp->set_top_p(top_p);
  sp->set_min_p(min_p);
  if (repetition != 1) sp->set_repetition_penalty(repetition);
  sp->set_presence_penalty(presence);
  sp->set_frequency_penalty(frequency);
  if (seed) sp->set_seed(*seed);
  for (const auto& s : stops) req.add_stop(s);
  if (auto s = ParseIds("stop-token-id", absl::StrJoin(stop_ids, ","), req.mutable_stop_token_ids()); !s.ok()) {
    return BadFlags(kCommand, s);
  }
  req.set_ignore_eos(ignore_eos);
  req.set_logprobs(logprobs);
  req.set_top_logprobs(top_logprobs);
  if (auto s = AddBricks(bricks, &req); !s.ok()) return BadFlags(kCommand, s);
  if (!router.empty()) {
    if (auto s = SetRouter(router, req.mutable_router()); !s.ok()) return BadFlags(kCommand, s);
  }
  req.set_module_trace(module_trace);
  stats |= module_trace;
  const bool show_logprobs = logprobs || top_logprobs > 0;

  auto stub = Connect(server);
  grpc::ClientContext context;
  SetTimeout(&context, timeout_s);
  if (unary) {
    v1::GenerateResponse resp;
    grpc::Status status = stub->Generate(&context, req, &resp);
    if (!status.ok()) return Fail(kCommand, status);
    std::cout << resp.text() << std::endl;
    PrintTokens(resp.tokens(), show_ids, show_logprobs);
    if (stats) PrintUsage(resp.finish_reason(), resp.matched_stop(), resp.usage());
    return 0;
  }
  auto reader = stub->GenerateStream(&context, req);
  v1::GenerateStreamResponse message;
  google::protobuf::RepeatedPtrField<v1::Token> tokens;
  v1::GenerateFinal final;
  while (reader->Read(&message)) {
    if (message.has_piece()) {
      std::cout << message.piece().text() << std::flush;
      for (const auto& t : message.piece().tokens()) *tokens.Add() = t;
    } else if (message.has_final()) {
      final = message.final();
    }
  }
  grpc::Status status = reader->Finish();
  std::cout << std::endl;  // flushed before anything goes to stderr
  if (!status.ok()) return Fail(kCommand, status);
  PrintTokens(tokens, show_ids, show_logprobs);
  if (stats) PrintUsage(final.finish_reason(), final.matched_stop(), final.usage());
  return 0;
}

int ModulesStatsServerCommand(int argc, char** argv, int first) {
  constexpr char kCommand[] = "brickserve modules stats";
  std::string server = kDefaultListenAddress;
  int extremes = 8;
  FlagSet flags(kCommand,
                "Print a running server's module usage since start-up (GetServerStats.module_usage): per layer "
                "the usage histogram and the modules no request has used (pruning candidates).");
  flags.String("server", &server, "server address host:port");
  flags.Int("extremes", &extremes, "most / least used modules listed per layer");
  if (absl::Status s = flags.Parse(argc, argv, first); !s.ok()) return BadFlags(kCommand, s);
  if (flags.help_requested()) {
    std::cout << flags.Usage();
    return 0;
  }
  grpc::ClientContext context;
  v1::GetServerStatsResponse stats;
  if (grpc::Status st = Connect(server)->GetServerStats(&context, {}, &stats); !st.ok()) return Fail(kCommand, st);
  if (!stats.has_module_usage()) {
    std::cerr << kCommand << ": the server at " << server << " has no module set (or has served no request yet)\n";
    return 1;
  }
  ModuleUsageReportOptions o;
  o.extremes = extremes;
  o.title = absl::StrCat("module usage of ", server, " over ", stats.total_requests(), " requests");
  std::cout << FormatModuleUsageReport(ModuleTraceFromProto(stats.module_usage()), o);
  return 0;
}

int ModulesCommandWithServer(int argc, char** argv, int first) {
  if (first < argc && std::string(argv[first]) == "stats") {
    for (int i = first + 1; i < argc; ++i) {
      const std::string a = argv[i];
      if (a == "--server" || a.rfind("--server=", 0) == 0) return ModulesStatsServerCommand(argc, argv, first + 1);
    }
  }
  return ModulesCommand(argc, argv, first);
}

int TokenizeCommand(int argc, char** argv, int first) {
  constexpr char kCommand[] = "brickserve tokenize";
  std::string server = kDefaultListenAddress, text, ids;
  bool no_special = false, skip_special = false;
  float timeout_s = 10;
  FlagSet flags(kCommand, "Encode text to token ids (or, with --ids, decode ids to text) on a brickserve server.");
  flags.String("server", &server, "server address host:port");
  flags.String("text", &text, "text to encode");
  flags.String("ids", &ids, "comma-separated token ids to decode instead");
  flags.Bool("no-special-tokens", &no_special, "encode without adding BOS/EOS");
  flags.Bool("skip-special-tokens", &skip_special, "decode without special tokens");
  flags.Float("timeout", &timeout_s, "deadline in seconds (0 = none)");
  if (absl::Status s = flags.Parse(argc, argv, first); !s.ok()) return BadFlags(kCommand, s);
  if (flags.help_requested()) {
    std::cout << flags.Usage();
    return 0;
  }
  auto stub = Connect(server);
  grpc::ClientContext context;
  SetTimeout(&context, timeout_s);
  if (!ids.empty()) {
    v1::DetokenizeRequest req;
    if (auto s = ParseIds("ids", ids, req.mutable_ids()); !s.ok()) return BadFlags(kCommand, s);
    req.set_skip_special_tokens(skip_special);
    v1::DetokenizeResponse resp;
    grpc::Status status = stub->Detokenize(&context, req, &resp);
    if (!status.ok()) return Fail(kCommand, status);
    std::cout << resp.text() << "\n";
    return 0;
  }
  v1::TokenizeRequest req;
  req.set_text(text);
  if (no_special) req.set_add_special_tokens(false);
  v1::TokenizeResponse resp;
  grpc::Status status = stub->Tokenize(&context, req, &resp);
  if (!status.ok()) return Fail(kCommand, status);
  std::cout << "ids: " << absl::StrJoin(resp.ids(), ",") << "\n";
  std::cout << "tokens: " << absl::StrJoin(resp.tokens(), " ") << "\n";
  return 0;
}

}  // namespace brickserve
