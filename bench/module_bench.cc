// Emergent-modules benchmark (docs/BENCHMARKS.md "Emergent modules"): decode tokens/s of --batch
// concurrent requests under the dense FFN and under router policies at several densities, on one
// model and its module set (`brickserve modules build`).
//
// Each round runs every policy once (so host speed drift hits all alike); a figure is the median
// over --runs rounds after one warm-up round. Decode = tokens after the last request's first token
// / time (bench/batch_runner.h), prompts are random, EOS is ignored.
#include <cstdio>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "bench/batch_runner.h"
#include "engine/cli/flags.h"
#include "engine/engine.h"

namespace brickserve {
namespace {

struct Options {
  std::string model_dir, modules;
  std::vector<std::string> policies;
  std::vector<int> batches;
  int prompt = 16, new_tokens = 64, runs = 3, threads = 0;
};

[[noreturn]] void Fail(const std::string& msg) {
  std::fprintf(stderr, "module_bench: %s\n", msg.c_str());
  std::exit(2);
}

Options Parse(int argc, char** argv) {
  Options o;
  std::string policies = "dense,density:1.0,density:0.5,density:0.3,density:0.2", batches = "1,16";
  FlagSet flags("module_bench", "Decode tokens/s of concurrent requests under router policies (docs/BENCHMARKS.md).");
  flags.String("model", &o.model_dir, "model directory (required)");
  flags.String("modules", &o.modules, "its module set (required)");
  flags.String("policies", &policies, "comma-separated router policies (the first is the baseline)");
  flags.String("batches", &batches, "comma-separated batch sizes (requests submitted at once)");
  flags.Int("prompt", &o.prompt, "random prompt tokens per request");
  flags.Int("new", &o.new_tokens, "tokens generated per request");
  flags.Int("runs", &o.runs, "measured rounds (after one warm-up round)");
  flags.Int("threads", &o.threads, "CPU threads (0 = all cores)");
  if (std::optional<int> exit_code = flags.ParseForCommand(argc, argv, 1)) std::exit(*exit_code);
  if (o.model_dir.empty() || o.modules.empty()) Fail("--model and --modules are required");
  o.policies = absl::StrSplit(policies, ',');
  for (auto part : absl::StrSplit(batches, ',')) {
    int n = 0;
    if (!absl::SimpleAtoi(part, &n) || n < 1) Fail("bad --batches");
    o.batches.push_back(n);
  }
  o.prompt = std::max(1, o.prompt);
  o.new_tokens = std::max(2, o.new_tokens);
  o.runs = std::max(1, o.runs);
  return o;
}

int Main(int argc, char** argv) {
  const Options o = Parse(argc, argv);
  const int max_batch = *std::max_element(o.batches.begin(), o.batches.end());
  EngineOptions eo;
  eo.model_dir = o.model_dir;
  eo.modules_path = o.modules;
  eo.device.threads = o.threads;
  eo.max_running = max_batch;
  eo.max_batch_tokens = std::max(512, max_batch);
  eo.kv_cache_tokens = max_batch * (o.prompt + o.new_tokens + 16);
  eo.prefix_cache = false;
  auto engine = Engine::Load(eo);
  if (!engine.ok()) Fail(engine.status().ToString());
  std::vector<RouterPolicy> policies;
  for (const std::string& p : o.policies) {
    auto parsed = ParseRouterPolicy(p);
    if (!parsed.ok()) Fail(parsed.status().ToString());
    policies.push_back(*parsed);
  }
  std::printf("model %s, modules %s (%d per layer), device %s\n", o.model_dir.c_str(), o.modules.c_str(),
              (*engine)->info().num_modules, (*engine)->info().device.c_str());
  std::mt19937 rng(42);
  std::uniform_int_distribution<int32_t> tok(3, (*engine)->config().vocab_size - 1);
  for (int batch : o.batches) {
    std::vector<std::vector<double>> decode(policies.size());
    for (int run = 0; run <= o.runs; ++run) {
      for (size_t pi = 0; pi < policies.size(); ++pi) {
        std::vector<GenerationRequest> reqs(batch);
        for (auto& r : reqs) {
          r.prompt_ids.push_back(1);
          for (int k = 1; k < o.prompt; ++k) r.prompt_ids.push_back(tok(rng));
          r.max_new_tokens = o.new_tokens;
          r.ignore_eos = true;
          r.router = policies[pi];
        }
        const RunResult res = RunBatch(**engine, reqs, "module_bench");
        if (run > 0) decode[pi].push_back(res.decode_tok_per_s);  // round 0 warms up
      }
    }
    std::printf("\nbatch %d: decode tok/s, median of %d runs\n%-22s %10s %8s\n", batch, o.runs, "policy", "tok/s",
                "vs dense");
    const double dense = Median(decode[0]);
    for (size_t pi = 0; pi < policies.size(); ++pi) {
      const double d = Median(decode[pi]);
      std::printf("%-22s %10.1f %7.2fx\n", o.policies[pi].c_str(), d, d / dense);
    }
  }
  return 0;
}

}  // namespace
}  // namespace brickserve

int main(int argc, char** argv) { return brickserve::Main(argc, argv); }
