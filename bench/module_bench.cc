// Emergent-modules benchmark (docs/BENCHMARKS.md "Emergent modules"): decode tokens/s of --batch
// concurrent requests under the dense FFN and under router policies at several densities, on one
// model and its module set (`brickserve modules build`).
//
// Each round runs every policy once (so host speed drift hits all alike); a figure is the median
// over --runs rounds after one warm-up round. Decode = tokens after the last request's first token
// / time (bench/batch_runner.h), prompts are random, EOS is ignored.
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "bench/batch_runner.h"
#include "engine/engine.h"

namespace brickserve {
namespace {

struct Options {
  std::string model_dir, modules;
  std::vector<std::string> policies = {"dense", "density:1.0", "density:0.5", "density:0.3", "density:0.2"};
  std::vector<int> batches = {1, 16};
  int prompt = 16, new_tokens = 64, runs = 3, threads = 0;
};

[[noreturn]] void Usage(const char* msg) {
  std::fprintf(stderr,
               "module_bench: %s\nusage: module_bench --model DIR --modules FILE [--policies dense,density:0.3,...]\n"
               "                    [--batches 1,16] [--prompt 16] [--new 64] [--runs 3] [--threads T]\n",
               msg);
  std::exit(2);
}

Options Parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) Usage(("missing value for " + a).c_str());
    const std::string v = argv[++i];
    int n = 0;
    if (a == "--model") o.model_dir = v;
    else if (a == "--modules") o.modules = v;
    else if (a == "--policies") o.policies = absl::StrSplit(v, ',');
    else if (a == "--batches") {
      o.batches.clear();
      for (auto part : absl::StrSplit(v, ',')) {
        if (!absl::SimpleAtoi(part, &n) || n < 1) Usage("bad --batches");
        o.batches.push_back(n);
      }
    } else if (!absl::SimpleAtoi(v, &n) || n < 0) Usage(("bad value for " + a).c_str());
    else if (a == "--prompt") o.prompt = std::max(1, n);
    else if (a == "--new") o.new_tokens = std::max(2, n);
    else if (a == "--runs") o.runs = std::max(1, n);
    else if (a == "--threads") o.threads = n;
    else Usage(("unknown flag " + a).c_str());
  }
  if (o.model_dir.empty() || o.modules.empty()) Usage("--model and --modules are required");
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
  if (!engine.ok()) Usage(engine.status().ToString().c_str());
  std::vector<RouterPolicy> policies;
  for (const std::string& p : o.policies) {
    auto parsed = ParseRouterPolicy(p);
    if (!parsed.ok()) Usage(parsed.status().ToString().c_str());
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
