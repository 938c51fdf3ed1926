// LoRA benchmark (docs/BENCHMARKS.md "LoRA bricks"): generation throughput of one batch of
// --batch requests whose adapters are spread over 0, 1, 8, 32 distinct LoRA bricks (request i uses
// adapter i mod D; D = 0 is the base model alone), and the time to load one brick.
//
//   throughput   all requests submitted at once: generated tokens / wall time (prefill included)
//   decode       after the last request's first token: (tokens generated after it) / time
//
// Each figure is the median of --runs rounds (each round runs every adapter count once, so host
// speed drift hits all alike) after one warm-up round. Adapters come from
// bench/make_random_adapters.py (rank 16 on every projection by default).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <future>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "bricks/brick_loader.h"
#include "bench/batch_runner.h"
#include "engine/engine.h"

namespace brickserve {
namespace {

struct Options {
  std::string model_dir, adapters_dir;
  std::vector<int> distinct = {0, 1, 8, 32};
  int batch = 32, prompt = 16, new_tokens = 64, runs = 3, threads = 0;
};

[[noreturn]] void Usage(const char* msg) {
  std::fprintf(stderr,
               "lora_bench: %s\nusage: lora_bench --model DIR --adapters DIR [--distinct 0,1,8,32] [--batch 32]\n"
               "                  [--prompt 16] [--new 64] [--runs 3] [--threads T]\n",
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
    else if (a == "--adapters") o.adapters_dir = v;
    else if (a == "--distinct") {
      o.distinct.clear();
      for (auto part : absl::StrSplit(v, ',')) {
        if (!absl::SimpleAtoi(part, &n) || n < 0) Usage("bad --distinct");
        o.distinct.push_back(n);
      }
    } else if (!absl::SimpleAtoi(v, &n) || n < 0) Usage(("bad value for " + a).c_str());
    else if (a == "--batch") o.batch = n;
    else if (a == "--prompt") o.prompt = n;
    else if (a == "--new") o.new_tokens = n;
    else if (a == "--runs") o.runs = std::max(1, n);
    else if (a == "--threads") o.threads = n;
    else Usage(("unknown flag " + a).c_str());
  }
  if (o.model_dir.empty() || o.adapters_dir.empty()) Usage("--model and --adapters are required");
  return o;
}

int Main(int argc, char** argv) {
  const Options o = Parse(argc, argv);
  EngineOptions eo;
  eo.model_dir = o.model_dir;
  eo.device.threads = o.threads;
  eo.max_running = o.batch;
  eo.max_batch_tokens = std::max(512, o.batch);
  eo.kv_cache_tokens = o.batch * (o.prompt + o.new_tokens + 16);
  eo.prefix_cache = false;
  auto engine = Engine::Load(eo);
  if (!engine.ok()) Usage(engine.status().ToString().c_str());
  const BaseModel base{(*engine)->config(), o.model_dir, (*engine)->device()};

  const int max_d = *std::max_element(o.distinct.begin(), o.distinct.end());
  std::vector<std::shared_ptr<Brick>> bricks;
  std::vector<double> load_s;
  for (int i = 0; i < max_d; ++i) {
    const Clock::time_point t0 = Clock::now();
    auto b = LoadBrickFromPath(o.adapters_dir + "/adapter-" + std::to_string(i), base);
    load_s.push_back(Since(t0));
    if (!b.ok()) Usage(b.status().ToString().c_str());
    bricks.push_back(*std::move(b));
  }
  if (!bricks.empty()) {
    std::printf("brick load: median %.1f ms over %zu loads (read, SHA-256, validate, bind); %.1f MiB each\n",
                1e3 * Median(load_s), load_s.size(), bricks[0]->size_bytes() / 1048576.0);
  }

  std::mt19937 rng(42);
  std::uniform_int_distribution<int32_t> tok(3, (*engine)->config().vocab_size - 1);
  // Rounds over every adapter count, so a drift of the host's speed hits them all alike.
  std::vector<std::vector<RunResult>> results(o.distinct.size());
  for (int run = 0; run <= o.runs; ++run) {
    for (size_t di = 0; di < o.distinct.size(); ++di) {
      const int d = o.distinct[di];
      std::vector<GenerationRequest> reqs(o.batch);
      for (int i = 0; i < o.batch; ++i) {
        reqs[i].prompt_ids.push_back(1);
        for (int k = 1; k < o.prompt; ++k) reqs[i].prompt_ids.push_back(tok(rng));
        reqs[i].max_new_tokens = o.new_tokens;
        reqs[i].ignore_eos = true;
        if (d > 0) (void)bricks[i % d]->Apply(1.0f, reqs[i]);
      }
      const RunResult r = RunBatch(**engine, reqs, "lora_bench");
      if (run > 0) results[di].push_back(r);  // round 0 warms up
    }
  }
  double base_tps = 0, base_decode = 0;
  std::printf("%-10s %12s %8s %14s %8s\n", "adapters", "tok/s", "vs base", "decode tok/s", "vs base");
  for (size_t di = 0; di < o.distinct.size(); ++di) {
    std::vector<double> tps, dec;
    for (const auto& r : results[di]) {
      tps.push_back(r.tok_per_s);
      dec.push_back(r.decode_tok_per_s);
    }
    const double t = Median(tps), dd = Median(dec);
    if (o.distinct[di] == 0) {
      base_tps = t;
      base_decode = dd;
    }
    std::printf("%-10d %12.1f %7.0f%% %14.1f %7.0f%%\n", o.distinct[di], t, base_tps > 0 ? 100 * t / base_tps : 0,
                dd, base_decode > 0 ? 100 * dd / base_decode : 0);
  }
  return 0;
}

}  // namespace
}  // namespace brickserve

int main(int argc, char** argv) { return brickserve::Main(argc, argv); }
