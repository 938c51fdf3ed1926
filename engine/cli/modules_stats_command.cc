// `brickserve modules stats`: which FFN modules a text uses under a router policy, per layer.
#include <cstdio>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "engine/cli/flags.h"
#include "engine/cli/module_usage_report.h"
#include "engine/cli/modules_command.h"
#include "engine/cli/perplexity.h"
#include "engine/engine.h"
#include "engine/util/read_file.h"

namespace brickserve {

int ModulesStatsCommand(int argc, char** argv, int first) {
  static constexpr const char* kCmd = "brickserve modules stats";
  EngineOptions eo;
  std::string text_path, policy_text = "density:0.3";
  int chunk_tokens = 255, max_tokens = 0;
  ModuleUsageReportOptions report;
  FlagSet flags(kCmd,
                "Score a text chunk by chunk under a router policy and show, per layer, how its tokens spread over "
                "the FFN modules: the share of tokens using each module, the most and least used, the modules no "
                "token used (pruning candidates), and the effective density.");
  flags.String("model", &eo.model_dir, "model directory in Hugging Face layout (required)");
  flags.String("modules", &eo.modules_path, "module set (`brickserve modules build`) (required)");
  flags.String("text", &text_path, "text file to score (required)");
  flags.String("policy", &policy_text, "router policy: dense, top_k:K or density:D, optionally :router|threshold|oracle|random");
  flags.Int("chunk-tokens", &chunk_tokens, "tokens per scored chunk (each prefixed with BOS)");
  flags.Int("max-tokens", &max_tokens, "score at most this many tokens of the text (0 = the whole file)");
  flags.Int("extremes", &report.extremes, "most and least used modules listed per layer");
  flags.String("device", &eo.device.kind, "backend: cpu, cuda or auto");
  flags.Int("threads", &eo.device.threads, "CPU threads (0 = all cores)");
  if (std::optional<int> exit_code = flags.ParseForCommand(argc, argv, first)) return *exit_code;
  if (eo.model_dir.empty() || eo.modules_path.empty() || text_path.empty()) {
    std::cerr << kCmd << ": --model, --modules and --text are required\n" << flags.Usage();
    return 2;
  }
  auto policy = ParseRouterPolicy(policy_text);
  if (!policy.ok()) {
    std::cerr << kCmd << ": --policy: " << policy.status().message() << "\n";
    return 2;
  }
  if (chunk_tokens < 1 || max_tokens < 0) {
    std::cerr << kCmd << ": --chunk-tokens must be >= 1 and --max-tokens >= 0\n";
    return 2;
  }
  auto text = ReadFileToString(text_path);
  if (!text.ok()) {
    std::cerr << kCmd << ": cannot read --text " << text_path << ": " << text.status().message() << "\n";
    return 2;
  }
  auto loaded = Engine::Load(eo);
  if (!loaded.ok()) {
    std::cerr << kCmd << ": " << loaded.status() << "\n";
    return 1;
  }
  Engine& engine = **loaded;
  if (auto s = ValidateRouterPolicy(*policy, engine.modules()); !s.ok()) {
    std::cerr << kCmd << ": --policy: " << s.message() << "\n";
    return 2;
  }
  auto chunks = TokenizeAllChunks(engine, *text, chunk_tokens, max_tokens);
  if (!chunks.ok()) {
    std::cerr << kCmd << ": --text " << text_path << ": " << chunks.status().message() << "\n";
    return 2;
  }
  ModuleTrace trace;
  auto ppl = Perplexity(engine, *chunks, &*policy, &trace);
  if (!ppl.ok()) {
    std::cerr << kCmd << ": " << ppl.status() << "\n";
    return 1;
  }
  char ppl_text[32];
  std::snprintf(ppl_text, sizeof(ppl_text), "%.3f", ppl->ppl);
  report.title = absl::StrCat("module usage of ", text_path, " under ", RouterPolicyToString(*policy), " (",
                              ppl->chunks, " chunks of up to ", chunk_tokens, " tokens; perplexity ",
                              ppl_text, ")");
  std::cout << FormatModuleUsageReport(trace, report);
  return 0;
}

}  // namespace brickserve
