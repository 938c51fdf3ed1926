// End-to-end CPU benchmark of the engine on one model directory (see docs/BENCHMARKS.md):
//
//   decode   batch 1, a random 128-token prompt, 128 new tokens, greedy, EOS ignored;
//            decode tok/s = (new tokens - 1) / (time after the first token), i.e. the 127 decode
//            steps (the first token comes out of the prefill)
//   prefill  a random 512-token prompt, one forward pass (512 = max_batch_tokens: one chunk);
//            prefill tok/s = 512 / time to first token
//   memory   peak resident set (VmHWM) against weight bytes + KV cache bytes
//
// Each measurement is the median of --runs runs after one warm-up run (the warm-up faults the
// memory-mapped weights into the process). It also prints the decode floor, the bytes a decode step
// must stream divided by the machine's read bandwidth: with --membw PATH (the bench/membw binary)
// the bandwidth is sampled right before every decode run and each run is compared with its own
// sample (the host's bandwidth drifts); --membw-gbs X uses one fixed figure instead.
//
// The model is loaded through Engine::Load / Engine::Generate when the binary is built with the
// engine (BRICKSERVE_BENCH_WITH_ENGINE), otherwise through LlamaModel::Forward directly with a
// loop that mirrors Engine::Generate (prefill in max_batch_tokens chunks, greedy sampling with the
// engine's Sampler, one Forward per decode step). --api picks one when both are built.
//
// --kernels instead breaks a decode step down, using the engine's own Device and ThreadPool: the
// matrix-vector products alone (weight streaming per matrix kind), a decode step replayed op by op
// with a timer per op, and the cost of one ThreadPool::ParallelFor hand-off.
//
// --device cpu|cuda|auto (default cpu) picks the backend for every path (on a GPU the kernel
// breakdown synchronises after each op, so each timer holds its op's kernels).
// --batch 1,8,64 adds batched decode (Engine API only): N requests (each a random --decode-prompt
// prompt, --decode-new tokens, greedy, EOS ignored) submitted at once to the engine's continuous
// batching, timed as bench/batch_runner.h does: decode tok/s counts every token generated after the
// last request's first token, over the time from then to the last token (all N sequences
// decoding); throughput tok/s is all generated tokens / wall time (prefill included). The KV pool
// is enlarged to hold N full requests. --max-step-ratio R sets the scheduler's step time target
// (default: the engine's, 2.5; 0 = none: prompts go in whole chunks while others decode, as before
// the target existed). Printed after the usual output, ending in BATCH_RESULT lines; --only batch
// runs only this part.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/backend/device.h"
#include "engine/model/config.h"
#include "engine/model/llama_model.h"
#include "engine/model/safetensors.h"
#include "engine/sampling/sampler.h"
#include "engine/sampling/sampling_params.h"
#include "engine/util/thread_pool.h"
#ifdef BRICKSERVE_BENCH_WITH_ENGINE
#include "bench/batch_runner.h"
#include "engine/engine.h"
#endif

namespace brickserve {
namespace {

using Clock = std::chrono::steady_clock;
double Since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

struct Options {
  std::string model_dir;
  std::string api = "auto";  // auto | engine | model
  int runs = 5;
  int threads = 0;
  int decode_prompt = 128;
  int decode_new = 128;
  int prefill_prompt = 512;
  int max_batch_tokens = 512;
  int kv_cache_tokens = 1024;
  int kv_block_size = 16;
  double membw_gbs = 0;
  std::string membw_bin;  // sample the bandwidth with this membw binary before each decode run
  bool kernels = false;
  std::string only = "all";  // all | decode | prefill | batch (for profiling one phase)
  int kernel_passes = 10;
  std::string device = "cpu";  // cpu | cuda | auto
  std::vector<int> batch;      // --batch: concurrent request counts for batched decode
  int kv_pool_tokens = 0;      // the KV pool: kv_cache_tokens, or enough for the largest batch
  double max_step_ratio = -1;  // --max-step-ratio; < 0: the engine's default
};

[[noreturn]] void Usage(const char* msg = nullptr) {
  if (msg) std::fprintf(stderr, "engine_bench: %s\n", msg);
  std::fprintf(stderr,
               "usage: engine_bench --model DIR [--api auto|engine|model] [--runs N] [--threads T]\n"
               "                    [--decode-prompt 128] [--decode-new 128] [--prefill-prompt 512]\n"
               "                    [--max-batch-tokens 512] [--kv-cache-tokens 1024] [--membw-gbs X | --membw PATH]\n"
               "                    [--only all|decode|prefill|batch] [--device cpu|cuda|auto] [--batch 1,8,64]\n"
               "                    [--max-step-ratio R]\n"
               "       engine_bench --model DIR --kernels [--kernel-passes 10] [--threads T] [--membw-gbs X | --membw PATH]\n"
               "                    [--device cpu|cuda|auto]\n");
  std::exit(2);
}

Options ParseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) Usage(("missing value for " + a).c_str());
      return argv[++i];
    };
    if (a == "--model") o.model_dir = next();
    else if (a == "--api") o.api = next();
    else if (a == "--runs") o.runs = std::stoi(next());
    else if (a == "--threads") o.threads = std::stoi(next());
    else if (a == "--decode-prompt") o.decode_prompt = std::stoi(next());
    else if (a == "--decode-new") o.decode_new = std::stoi(next());
    else if (a == "--prefill-prompt") o.prefill_prompt = std::stoi(next());
    else if (a == "--max-batch-tokens") o.max_batch_tokens = std::stoi(next());
    else if (a == "--kv-cache-tokens") o.kv_cache_tokens = std::stoi(next());
    else if (a == "--membw-gbs") o.membw_gbs = std::stod(next());
    else if (a == "--membw") o.membw_bin = next();
    else if (a == "--kernels") o.kernels = true;
    else if (a == "--only") o.only = next();
    else if (a == "--kernel-passes") o.kernel_passes = std::stoi(next());
    else if (a == "--max-step-ratio") o.max_step_ratio = std::stod(next());
    else if (a == "--device") o.device = next();
    else if (a == "--batch") {
      std::stringstream ss(next());
      std::string part;
      while (std::getline(ss, part, ',')) {
        if (part.empty()) continue;
        const int n = std::atoi(part.c_str());
        if (n < 1) Usage("--batch takes a comma-separated list of positive request counts, e.g. 1,8,64");
        o.batch.push_back(n);
      }
      if (o.batch.empty()) Usage("--batch needs at least one request count");
    }
    else if (a == "--help" || a == "-h") Usage();
    else Usage(("unknown flag " + a).c_str());
  }
  if (o.model_dir.empty()) Usage("--model is required");
  if (o.only != "all" && o.only != "decode" && o.only != "prefill" && o.only != "batch") {
    Usage("--only must be all, decode, prefill or batch");
  }
  if (o.only == "batch" && o.batch.empty()) Usage("--only batch needs --batch N[,N...]");
  if (o.device != "cpu" && o.device != "cuda" && o.device != "auto") Usage("--device must be cpu, cuda or auto");
  if (o.runs < 1 || o.decode_new < 2 || o.decode_prompt < 1 || o.prefill_prompt < 1) Usage("bad sizes");
  o.kv_pool_tokens = o.kv_cache_tokens;
  if (!o.batch.empty()) {
    // Every request of the largest batch holds its whole context at once (no preemption).
    const int per_request = (o.decode_prompt + o.decode_new + o.kv_block_size - 1) / o.kv_block_size * o.kv_block_size;
    o.kv_pool_tokens = std::max(o.kv_pool_tokens, *std::max_element(o.batch.begin(), o.batch.end()) * per_request);
  }
  return o;
}

// --- memory -----------------------------------------------------------------------------------

// Fields of /proc/self/status in bytes (VmHWM, VmRSS, RssAnon, RssFile).
std::map<std::string, size_t> ProcStatus() {
  std::map<std::string, size_t> out;
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    const std::string key = line.substr(0, colon);
    if (key != "VmHWM" && key != "VmRSS" && key != "RssAnon" && key != "RssFile" && key != "RssShmem") continue;
    std::istringstream v(line.substr(colon + 1));
    size_t kb = 0;
    v >> kb;
    out[key] = kb * 1024;
  }
  return out;
}

double MiB(size_t b) { return b / double(1 << 20); }

void PrintMemory(const char* when) {
  auto s = ProcStatus();
  std::printf("  memory %-22s VmRSS %8.1f MiB (anon %7.1f, file %7.1f)   VmHWM %8.1f MiB\n", when, MiB(s["VmRSS"]),
              MiB(s["RssAnon"]), MiB(s["RssFile"]), MiB(s["VmHWM"]));
}

// --- other load on the machine -----------------------------------------------------------------

// CPU time the rest of the machine used while a section ran (from /proc/stat minus this process's
// own rusage), as a fraction of all cores; and the hypervisor's steal time. The machine is shared,
// so every section reports it next to its numbers.
class CpuMonitor {
 public:
  void Start() {
    t0_ = Clock::now();
    ReadStat(&busy0_, &steal0_);
    self0_ = SelfCpu();
  }
  // Returns {foreign busy fraction, steal fraction} since Start().
  std::pair<double, double> Stop() const {
    double busy1 = 0, steal1 = 0;
    ReadStat(&busy1, &steal1);
    const double wall = Since(t0_) * std::max(1u, std::thread::hardware_concurrency());
    const double foreign = (busy1 - busy0_) - (SelfCpu() - self0_);
    return {std::max(0.0, foreign / wall), (steal1 - steal0_) / wall};
  }

 private:
  static void ReadStat(double* busy, double* steal) {
    std::ifstream f("/proc/stat");
    std::string cpu;
    double v[8] = {};
    f >> cpu;
    for (double& x : v) f >> x;
    const double hz = static_cast<double>(sysconf(_SC_CLK_TCK));
    // user nice system idle iowait irq softirq steal
    *busy = (v[0] + v[1] + v[2] + v[5] + v[6]) / hz;
    *steal = v[7] / hz;
  }
  // This process and its waited-for children (the membw samples).
  static double SelfCpu() {
    double sec = 0;
    for (int who : {RUSAGE_SELF, RUSAGE_CHILDREN}) {
      struct rusage ru {};
      getrusage(who, &ru);
      sec += ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
    }
    return sec;
  }
  Clock::time_point t0_;
  double busy0_ = 0, steal0_ = 0, self0_ = 0;
};

// --- statistics -------------------------------------------------------------------------------

struct Stats {
  double median = 0, min = 0, max = 0;
  // (max - min) / median: how noisy the runs were.
  double spread() const { return median > 0 ? (max - min) / median : 0; }
};

Stats Summarise(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  Stats s;
  const size_t n = v.size();
  s.median = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  s.min = v.front();
  s.max = v.back();
  return s;
}

// --- the two ways to drive the model ----------------------------------------------------------

struct RunTiming {
  double ttft_s = 0;     // prompt in -> first token sampled (prefill + one sample)
  double decode_s = 0;   // first token -> last token (new - 1 decode steps)
  int new_tokens = 0;
  std::vector<double> step_s;  // per decode step, when the runner can see them
  std::vector<int32_t> ids;    // the generated tokens
};

class Runner {
 public:
  virtual ~Runner() = default;
  virtual std::string name() const = 0;
  virtual const ModelConfig& config() const = 0;
  virtual size_t weight_bytes() const = 0;
  virtual size_t kv_cache_bytes() const = 0;
  virtual std::string device() const = 0;
  virtual absl::StatusOr<RunTiming> Generate(const std::vector<int32_t>& prompt, int max_new) = 0;
};

// LlamaModel::Forward directly, mirroring Engine::Generate's loop (no tokenizer needed).
class ModelRunner final : public Runner {
 public:
  static absl::StatusOr<std::unique_ptr<ModelRunner>> Load(const Options& o) {
    auto r = std::unique_ptr<ModelRunner>(new ModelRunner());
    auto cfg = LoadModelConfig(o.model_dir);
    if (!cfg.ok()) return cfg.status();
    r->config_ = *cfg;
    auto dev = CreateDevice({o.device, o.threads});
    if (!dev.ok()) return dev.status();
    r->device_ = *std::move(dev);
    auto model = LlamaModel::Load(o.model_dir, r->config_, r->device_.get(), o.max_batch_tokens);
    if (!model.ok()) return model.status();
    r->model_ = *std::move(model);
    KvCacheSpec spec;
    spec.num_layers = r->config_.num_layers;
    spec.num_kv_heads = r->config_.num_kv_heads;
    spec.head_dim = r->config_.head_dim;
    spec.block_size = o.kv_block_size;
    spec.num_blocks = (o.kv_cache_tokens + spec.block_size - 1) / spec.block_size;
    auto cache = r->device_->AllocKvCache(spec);
    if (!cache.ok()) return cache.status();
    r->cache_ = *std::move(cache);
    // One sequence at a time: it owns every block, in order.
    r->blocks_.resize(spec.num_blocks);
    std::iota(r->blocks_.begin(), r->blocks_.end(), 0);
    return r;
  }
  std::string name() const override { return "LlamaModel::Forward (engine loop mirrored in the bench)"; }
  const ModelConfig& config() const override { return config_; }
  size_t weight_bytes() const override { return model_->weight_bytes(); }
  size_t kv_cache_bytes() const override { return cache_.spec.bytes(); }
  std::string device() const override { return device_->name(); }

  absl::StatusOr<RunTiming> Generate(const std::vector<int32_t>& prompt, int max_new) override {
    const int n = static_cast<int>(prompt.size());
    if (n + max_new > static_cast<int>(blocks_.size()) * cache_.spec.block_size) {
      return absl::InvalidArgumentError("prompt + new tokens exceed the KV cache");
    }
    RunTiming t;
    const auto t0 = Clock::now();
    const int chunk = model_->max_batch_tokens();
    std::vector<float> logits;
    for (int off = 0; off < n; off += chunk) {
      const int len = std::min(chunk, n - off);
      SequenceInput in{std::span<const int32_t>(prompt.data() + off, len), off, blocks_, LogitRows::kLast};
      if (auto s = model_->Forward({&in, 1}, cache_, &logits); !s.ok()) return s;
    }
    SamplingParams greedy;  // temperature 0
    Sampler sampler(greedy, prompt);
    int32_t id = sampler.Sample(logits);
    t.ttft_s = Since(t0);
    t.new_tokens = 1;
    t.ids.push_back(id);
    const auto t1 = Clock::now();
    int pos = n;
    while (t.new_tokens < max_new) {
      const auto ts = Clock::now();
      SequenceInput in{std::span<const int32_t>(&id, 1), pos++, blocks_, LogitRows::kLast};
      if (auto s = model_->Forward({&in, 1}, cache_, &logits); !s.ok()) return s;
      id = sampler.Sample(logits);
      ++t.new_tokens;
      t.ids.push_back(id);
      t.step_s.push_back(Since(ts));
    }
    t.decode_s = Since(t1);
    return t;
  }

 private:
  ModelConfig config_;
  std::unique_ptr<Device> device_;
  std::unique_ptr<LlamaModel> model_;
  KvCache cache_;
  std::vector<int32_t> blocks_;
};

#ifdef BRICKSERVE_BENCH_WITH_ENGINE
// The real serving path: Engine::Load + Engine::Generate (tokenizer, sampler, stop handling,
// incremental detokenisation included).
class EngineRunner final : public Runner {
 public:
  static absl::StatusOr<std::unique_ptr<EngineRunner>> Load(const Options& o) {
    EngineOptions eo;
    eo.model_dir = o.model_dir;
    eo.device.kind = o.device;
    eo.device.threads = o.threads;
    eo.max_batch_tokens = o.max_batch_tokens;
    eo.kv_block_size = o.kv_block_size;
    eo.kv_cache_tokens = o.kv_pool_tokens;
    eo.max_context = o.kv_cache_tokens;
    if (o.max_step_ratio >= 0) eo.max_step_ratio = o.max_step_ratio;
    if (!o.batch.empty()) eo.max_running = std::max(eo.max_running, *std::max_element(o.batch.begin(), o.batch.end()));
    auto e = Engine::Load(eo);
    if (!e.ok()) return e.status();
    auto r = std::unique_ptr<EngineRunner>(new EngineRunner());
    r->engine_ = *std::move(e);
    return r;
  }
  std::string name() const override { return "Engine::Generate"; }
  Engine& engine() { return *engine_; }
  const ModelConfig& config() const override { return engine_->config(); }
  size_t weight_bytes() const override { return engine_->info().weight_bytes; }
  size_t kv_cache_bytes() const override { return engine_->info().kv_cache_bytes; }
  std::string device() const override { return engine_->info().device; }

  absl::StatusOr<RunTiming> Generate(const std::vector<int32_t>& prompt, int max_new) override {
    GenerationRequest req;
    req.prompt_ids = prompt;
    req.max_new_tokens = max_new;
    req.ignore_eos = true;  // sampling defaults to greedy
    auto res = engine_->Generate(req);
    if (!res.ok()) return res.status();
    RunTiming t;
    t.ttft_s = res->time_to_first_token_s;
    t.decode_s = res->total_time_s - res->time_to_first_token_s;
    t.new_tokens = res->completion_tokens;
    t.ids = res->token_ids();
    if (t.new_tokens != max_new) {
      return absl::InternalError("Engine::Generate stopped after " + std::to_string(t.new_tokens) + " of " +
                                 std::to_string(max_new) + " tokens (finish reason " +
                                 FinishReasonName(res->finish_reason) + ")");
    }
    return t;
  }

 private:
  std::unique_ptr<Engine> engine_;
};
#endif

// --- bandwidth samples -----------------------------------------------------------------------

// Runs `membw --gib 1 --passes 4 --no-scan` (a child process, so its array never counts in this
// process's peak RSS) and returns its median GB/s with all threads, or 0 on failure. The host's
// memory bandwidth drifts by tens of percent over minutes, so each decode run gets its own sample.
double SampleBandwidth(const std::string& membw_bin) {
  const std::string cmd = "'" + membw_bin + "' --gib 1 --passes 4 --no-scan 2>/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return 0;
  char line[512];
  double gbs = 0;
  while (std::fgets(line, sizeof(line), p) != nullptr) {
    if (const char* m = std::strstr(line, "median_gbs=")) gbs = std::atof(m + 11);
  }
  pclose(p);
  return gbs;
}

// --- bytes a decode step must read ------------------------------------------------------------

struct DecodeBytes {
  size_t weights = 0;  // every layer matrix + lm_head + final norm + one embedding row
  size_t kv = 0;       // K and V of the average context over the decode steps (F32 cache)
};

DecodeBytes BytesPerDecodeToken(const ModelConfig& c, size_t elem, int prompt, int new_tokens) {
  const size_t H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size;
  const size_t QD = size_t(c.num_heads) * c.head_dim, KD = size_t(c.num_kv_heads) * c.head_dim;
  const size_t layer = (QD * H + 2 * KD * H + H * QD + 3 * I * H) * elem + 2 * H * sizeof(float);
  DecodeBytes b;
  b.weights = c.num_layers * layer + V * H * elem + H * sizeof(float) + H * elem;
  // Decode step k (k = 1 .. new - 1) attends over prompt + k positions.
  const double avg_ctx = prompt + new_tokens / 2.0;
  b.kv = static_cast<size_t>(2.0 * c.num_layers * avg_ctx * KD * sizeof(float));
  return b;
}

size_t ParamCount(const ModelConfig& c) {
  const size_t H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size;
  const size_t QD = size_t(c.num_heads) * c.head_dim, KD = size_t(c.num_kv_heads) * c.head_dim;
  return c.num_layers * (QD * H + 2 * KD * H + H * QD + 3 * I * H + 2 * H) + V * H * (c.tie_word_embeddings ? 1 : 2) + H;
}

std::vector<int32_t> RandomPrompt(int n, uint64_t seed) {
  // Ids from the range every tokenizer we ship covers (brick-tiny's 8192), skipping 0..2 (specials).
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> dist(3, 8191);
  std::vector<int32_t> ids(n);
  for (auto& id : ids) id = dist(rng);
  return ids;
}

// --- the kernel breakdown (--kernels) ---------------------------------------------------------

#define BENCH_CHECK(expr)                                                             \
  do {                                                                                \
    const absl::Status bench_s_ = (expr);                                             \
    if (!bench_s_.ok()) {                                                             \
      std::fprintf(stderr, "engine_bench: %s: %s\n", #expr, bench_s_.ToString().c_str()); \
      std::exit(1);                                                                   \
    }                                                                                 \
  } while (0)

template <typename T>
T Unwrap(absl::StatusOr<T> v, const char* what) {
  if (!v.ok()) {
    std::fprintf(stderr, "engine_bench: %s: %s\n", what, v.status().ToString().c_str());
    std::exit(1);
  }
  return *std::move(v);
}

// Three views of one decode step, all through the engine's own Device / ThreadPool code:
//  1. every decode matrix-vector product back to back (pure weight streaming, per matrix kind);
//  2. a decode step replayed op by op in LlamaModel::Forward's order at the benchmark's average
//     context, with a timer per op kind (where the step's time goes);
//  3. the round trip of an empty ThreadPool::ParallelFor over two threads (the cost every
//     parallel op pays to wake the other core).
int RunKernels(const Options& o) {
  const ModelConfig c = Unwrap(LoadModelConfig(o.model_dir), "config");
  auto dev = Unwrap(CreateDevice({o.device, o.threads}), "device");
  Device& d = *dev;
  // On a GPU the ops are asynchronous: wait after each one so its timer holds its kernels. The CPU
  // path is unchanged (its ops return when done).
  const bool sync_each_op = o.device != "cpu";
  auto maybe_sync = [&]() { if (sync_each_op) BENCH_CHECK(d.Synchronize()); };
  const CheckpointTensors ckpt = Unwrap(CheckpointTensors::Open(o.model_dir), "checkpoint");
  // Projections and lm_head as LlamaModel uploads them (`matmul_only`: the CPU packs them into panels).
  auto bind = [&](const std::string& name, bool matmul_only = false) {
    HostTensor t = Unwrap(ckpt.Get(name), name.c_str());
    t.matmul_only = matmul_only;
    return Unwrap(d.UploadWeight(t), name.c_str());
  };
  struct Layer { Weight in_norm, post_norm, q, k, v, o, gate, up, down; };
  std::vector<Layer> layers;
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    layers.push_back({bind(p + "input_layernorm.weight"), bind(p + "post_attention_layernorm.weight"),
                      bind(p + "self_attn.q_proj.weight", true), bind(p + "self_attn.k_proj.weight", true),
                      bind(p + "self_attn.v_proj.weight", true), bind(p + "self_attn.o_proj.weight", true),
                      bind(p + "mlp.gate_proj.weight", true), bind(p + "mlp.up_proj.weight", true),
                      bind(p + "mlp.down_proj.weight", true)});
  }
  const Weight embed = bind("model.embed_tokens.weight");
  const Weight final_norm = bind("model.norm.weight");
  const Weight lm_head = ckpt.Has("lm_head.weight") ? bind("lm_head.weight", true) : embed;
  const std::vector<float> inv_freq_host = c.RopeInvFreq();
  const Weight inv_freq = Unwrap(
      d.UploadWeight({DType::kF32, {static_cast<int64_t>(inv_freq_host.size())}, inv_freq_host.data(), nullptr}), "rope");

  struct Mat { std::string kind; const Weight* w; };
  std::vector<Mat> mats;
  for (const auto& L : layers) {
    for (auto [k, w] : {std::pair<const char*, const Weight*>{"q_proj", &L.q}, {"k_proj", &L.k}, {"v_proj", &L.v},
                        {"o_proj", &L.o}, {"gate_proj", &L.gate}, {"up_proj", &L.up}, {"down_proj", &L.down}}) {
      mats.push_back({k, w});
    }
  }
  mats.push_back({"lm_head", &lm_head});
  const int H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size;
  const int QD = c.num_heads * c.head_dim, KD = c.num_kv_heads * c.head_dim;
  auto buf = [&](size_t n) { return Unwrap(d.AllocBuffer(n), "buffer"); };
  Buffer x = buf(std::max(H, std::max(QD, I))), y = buf(std::max<size_t>(V, I));
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0, 1);
  if (!sync_each_op) {
    for (size_t i = 0; i < x.size; ++i) x.data[i] = nd(rng);
  } else {  // device memory: fill on the host, copy up
    std::vector<float> host_x(x.size);
    for (float& v : host_x) v = nd(rng);
    BENCH_CHECK(d.CopyToDevice(host_x, x, 0));
    BENCH_CHECK(d.Synchronize());
  }
  auto bytes_of = [](const Weight& w) { return static_cast<size_t>(w.rows * w.cols) * DTypeSize(w.dtype); };
  size_t total = 0;
  std::map<std::string, size_t> kind_bytes;
  for (const auto& m : mats) {
    total += bytes_of(*m.w);
    kind_bytes[m.kind] += bytes_of(*m.w);
  }
  const char* dtype = DTypeName(lm_head.dtype);

  // 1. Matrix-vector products alone.
  std::printf("kernels 1: the %zu decode matrix-vector products back to back (%s, %.1f MiB), %s\n", mats.size(), dtype,
              MiB(total), d.name().c_str());
  std::map<std::string, std::vector<double>> per_kind;
  std::vector<double> pass_s;
  for (int p = 0; p < o.kernel_passes + 2; ++p) {  // two warm-up passes
    std::map<std::string, double> kind_s;
    const auto t0 = Clock::now();
    for (const auto& m : mats) {
      const auto tm = Clock::now();
      BENCH_CHECK(d.MatMul(x, 1, *m.w, nullptr, y));
      maybe_sync();
      kind_s[m.kind] += Since(tm);
    }
    const double sec = Since(t0);
    if (p < 2) continue;
    pass_s.push_back(sec);
    for (const auto& [k, v] : kind_s) per_kind[k].push_back(v);
  }
  const Stats ps = Summarise(pass_s);
  std::printf("  %-10s %6s %10s %10s %9s %11s\n", "matrix", "calls", "MiB/pass", "ms/pass", "GB/s", "us/call");
  for (const auto& [k, v] : per_kind) {
    const Stats ks = Summarise(v);
    const size_t calls = std::count_if(mats.begin(), mats.end(), [&](const Mat& m) { return m.kind == k; });
    std::printf("  %-10s %6zu %10.1f %10.2f %9.2f %11.1f\n", k.c_str(), calls, MiB(kind_bytes[k]), ks.median * 1e3,
                kind_bytes[k] / ks.median / 1e9, ks.median / calls * 1e6);
  }
  std::printf("  %-10s %6zu %10.1f %10.2f %9.2f   (median of %d passes, spread %.1f%%)\n", "all", mats.size(),
              MiB(total), ps.median * 1e3, total / ps.median / 1e9, o.kernel_passes, 100 * ps.spread());
  if (o.membw_gbs > 0) {
    std::printf("  matvec time / bandwidth floor at %.2f GB/s: %.2fx\n", o.membw_gbs,
                ps.median / (total / (o.membw_gbs * 1e9)));
  }

  // 2. One decode step, op by op, at the decode benchmark's average context.
  const int ctx = o.decode_prompt + o.decode_new / 2;
  KvCacheSpec spec{c.num_layers, c.num_kv_heads, c.head_dim, o.kv_block_size,
                   (o.kv_cache_tokens + o.kv_block_size - 1) / o.kv_block_size};
  KvCache cache = Unwrap(d.AllocKvCache(spec), "kv cache");
  std::vector<int32_t> blocks(spec.num_blocks);
  std::iota(blocks.begin(), blocks.end(), 0);
  Buffer hidden = buf(H), normed = buf(H), q = buf(QD), k = buf(KD), v = buf(KD), attn = buf(QD),
         proj = buf(std::max(H, QD)), gate = buf(I), up = buf(I), logits = buf(V), last = buf(H);
  const std::vector<int32_t> ids = {1234};
  const int pos = ctx - 1;
  const std::vector<int32_t> positions = {pos};
  const std::vector<int32_t> slots = {blocks[pos / spec.block_size] * spec.block_size + pos % spec.block_size};
  const AttentionSeq seq{0, 1, ctx, blocks};
  const AttentionParams ap{c.num_heads, c.num_kv_heads, c.head_dim, 1.0f / std::sqrt(static_cast<float>(c.head_dim))};
  const float eps = static_cast<float>(c.rms_norm_eps);
  std::vector<float> host_logits(V);
  std::map<std::string, std::vector<double>> op_s;
  std::vector<double> step_s;
  for (int p = 0; p < o.kernel_passes + 2; ++p) {
    std::map<std::string, double> t;
    Clock::time_point tm;
#define OP(name, expr)          \
  tm = Clock::now();            \
  BENCH_CHECK(expr);            \
  maybe_sync();                 \
  t[name] += Since(tm)
    const auto t0 = Clock::now();
    OP("embed", d.Embed(embed, ids, hidden));
    for (const auto& L : layers) {
      OP("rms_norm", d.RmsNorm(hidden, L.in_norm, 1, eps, normed));
      OP("matvec q/k/v", d.MatMul(normed, 1, L.q, nullptr, q));
      OP("matvec q/k/v", d.MatMul(normed, 1, L.k, nullptr, k));
      OP("matvec q/k/v", d.MatMul(normed, 1, L.v, nullptr, v));
      OP("rope", d.Rope(q, 1, c.num_heads, c.head_dim, positions, inv_freq));
      OP("rope", d.Rope(k, 1, c.num_kv_heads, c.head_dim, positions, inv_freq));
      OP("write_kv", d.WriteKv(cache, static_cast<int>(&L - layers.data()), k, v, slots));
      OP("attention", d.Attention(q, cache, static_cast<int>(&L - layers.data()), {&seq, 1}, ap, attn));
      OP("matvec o", d.MatMul(attn, 1, L.o, nullptr, proj));
      OP("add", d.Add(hidden, proj, H));
      OP("rms_norm", d.RmsNorm(hidden, L.post_norm, 1, eps, normed));
      OP("matvec gate/up", d.MatMul(normed, 1, L.gate, nullptr, gate));
      OP("matvec gate/up", d.MatMul(normed, 1, L.up, nullptr, up));
      OP("swiglu", d.SwiGlu(gate, up, I, gate));
      OP("matvec down", d.MatMul(gate, 1, L.down, nullptr, proj));
      OP("add", d.Add(hidden, proj, H));
    }
    OP("final norm + lm_head", d.Copy(hidden, 0, last, 0, H));
    OP("final norm + lm_head", d.RmsNorm(last, final_norm, 1, eps, last));
    OP("final norm + lm_head", d.MatMul(last, 1, lm_head, nullptr, logits));
    OP("final norm + lm_head", d.CopyToHost(logits, 0, host_logits));
#undef OP
    const double sec = Since(t0);
    if (p < 2) continue;
    step_s.push_back(sec);
    for (const auto& [name, v] : t) op_s[name].push_back(v);
  }
  const Stats ss = Summarise(step_s);
  std::printf("\nkernels 2: one decode step replayed op by op (LlamaModel::Forward's order), context %d\n", ctx);
  std::printf("  %-22s %10s %8s\n", "op", "ms/step", "share");
  double sum_ops = 0;
  for (const auto& [name, v] : op_s) sum_ops += Summarise(v).median;
  for (const auto& [name, v] : op_s) {
    const double m = Summarise(v).median;
    std::printf("  %-22s %10.3f %7.1f%%\n", name.c_str(), m * 1e3, 100 * m / sum_ops);
  }
  std::printf("  %-22s %10.3f   (median of %d steps, spread %.1f%%)\n", "step", ss.median * 1e3, o.kernel_passes,
              100 * ss.spread());
  if (o.membw_gbs > 0) {
    const DecodeBytes db = BytesPerDecodeToken(c, DTypeSize(lm_head.dtype), o.decode_prompt, o.decode_new);
    std::printf("  step time / bandwidth floor (weights) at %.2f GB/s: %.2fx\n", o.membw_gbs,
                ss.median / (db.weights / (o.membw_gbs * 1e9)));
  }

  // 3. ThreadPool round trip.
  const int threads = o.threads > 0 ? o.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  ThreadPool pool(threads);
  std::vector<double> rt;
  volatile int sink = 0;
  for (int rep = 0; rep < 7; ++rep) {
    const int calls = 2000;
    const auto t0 = Clock::now();
    for (int i = 0; i < calls; ++i) {
      pool.ParallelFor(threads, 1, [&](size_t b, size_t e) { sink = sink + static_cast<int>(e - b); });
    }
    if (rep > 0) rt.push_back(Since(t0) / calls);
  }
  const double rt_us = Summarise(rt).median * 1e6;
  // Parallel ops per decode step: 7 matvecs + attention per layer, plus lm_head.
  const int par_ops = 8 * c.num_layers + 1;
  std::printf("\nkernels 3: empty ThreadPool::ParallelFor over %d threads: %.1f us per call (median of 6 x 2000);\n"
              "  a decode step issues ~%d parallel ops -> ~%.2f ms/step of hand-off alone\n",
              threads, rt_us, par_ops, par_ops * rt_us / 1e3);
  std::printf("RESULT kernels dtype=%s matvec_ms=%.3f matvec_gbs=%.3f matvec_bytes=%zu replay_step_ms=%.3f "
              "attention_ms=%.3f parallel_for_us=%.2f\n",
              dtype, ps.median * 1e3, total / ps.median / 1e9, total, ss.median * 1e3,
              Summarise(op_s["attention"]).median * 1e3, rt_us);
  return 0;
}

#ifdef BRICKSERVE_BENCH_WITH_ENGINE
// --- batched decode (--batch) -------------------------------------------------------------------

// N requests submitted at once (bench/batch_runner.h's TimeBatch); any failed request or short
// generation is an error.
absl::StatusOr<BatchTiming> RunBatchOnce(Engine& engine, int n, const Options& o, uint64_t seed) {
  std::vector<GenerationRequest> reqs(n);
  for (int i = 0; i < n; ++i) {
    reqs[i].prompt_ids = RandomPrompt(o.decode_prompt, seed + i);
    reqs[i].max_new_tokens = o.decode_new;
    reqs[i].ignore_eos = true;  // sampling defaults to greedy
  }
  absl::StatusOr<BatchTiming> t = TimeBatch(engine, reqs);
  if (!t.ok()) return t.status();
  for (int i = 0; i < n; ++i) {
    if (!t->errors[i].ok()) return t->errors[i];
    if (t->tokens[i] != o.decode_new) {
      return absl::InternalError("request " + std::to_string(i) + " of " + std::to_string(n) + " generated " +
                                 std::to_string(t->tokens[i]) + " of " + std::to_string(o.decode_new) + " tokens");
    }
  }
  return t;
}

// The --batch section: for each N, one warm-up and --runs timed runs; medians.
int RunBatches(Engine& engine, const Options& o) {
  std::printf("\n  batched decode: N concurrent requests (prompt %d, %d new each, greedy, EOS ignored), device %s\n",
              o.decode_prompt, o.decode_new, engine.info().device.c_str());
  struct Row { int n; Stats decode, thr; double first_s; };
  std::vector<Row> rows;
  for (int n : o.batch) {
    std::vector<double> dec, thr, first;
    for (int r = 0; r <= o.runs; ++r) {
      auto t = RunBatchOnce(engine, n, o, 5000 + 1000 * static_cast<uint64_t>(r));
      if (!t.ok()) {
        std::fprintf(stderr, "engine_bench: batch %d: %s\n", n, t.status().ToString().c_str());
        return 1;
      }
      std::printf("  batch %3d run %d%s: decode %9.2f tok/s  throughput %9.2f tok/s  (%d tokens in %.3f s, last first token at %.3f s)\n",
                  n, r, r == 0 ? " (warm-up)" : "          ", t->decode_tok_per_s, t->tok_per_s, t->total_tokens, t->wall_s,
                  t->last_first_token_s);
      if (r == 0) continue;
      dec.push_back(t->decode_tok_per_s);
      thr.push_back(t->tok_per_s);
      first.push_back(t->last_first_token_s);
    }
    rows.push_back({n, Summarise(dec), Summarise(thr), Summarise(first).median});
  }
  std::printf("\n  %-8s %14s %18s %16s %8s %18s\n", "batch", "decode tok/s", "per request tok/s", "throughput tok/s",
              "spread", "last first tok s");
  for (const Row& r : rows) {
    std::printf("  %-8d %14.2f %18.2f %16.2f %7.1f%% %18.3f\n", r.n, r.decode.median, r.decode.median / r.n,
                r.thr.median, 100 * r.decode.spread(), r.first_s);
  }
  for (const Row& r : rows) {
    // The device name has spaces: last, everything after "device=".
    std::printf("BATCH_RESULT batch=%d prompt=%d new=%d decode_tok_s=%.3f decode_spread=%.4f "
                "per_request_tok_s=%.3f throughput_tok_s=%.3f last_first_token_s=%.4f runs=%d device=%s\n",
                r.n, o.decode_prompt, o.decode_new, r.decode.median, r.decode.spread(), r.decode.median / r.n,
                r.thr.median, r.first_s, o.runs, engine.info().device.c_str());
  }
  return 0;
}
#endif

// --- main benchmark ---------------------------------------------------------------------------

int Run(const Options& o) {
  PrintMemory("at start");
  const auto t_load = Clock::now();
  std::unique_ptr<Runner> runner;
  std::string api = o.api;
#ifdef BRICKSERVE_BENCH_WITH_ENGINE
  if (api == "auto") api = "engine";
  if (api == "engine") {
    auto r = EngineRunner::Load(o);
    if (!r.ok()) { std::fprintf(stderr, "engine_bench: Engine::Load: %s\n", r.status().ToString().c_str()); return 1; }
    runner = *std::move(r);
  }
#else
  if (api == "auto") api = "model";
  if (api == "engine") Usage("this binary was built without the engine (bs_engine); use --api model");
#endif
  if (api == "model") {
    auto r = ModelRunner::Load(o);
    if (!r.ok()) { std::fprintf(stderr, "engine_bench: LlamaModel::Load: %s\n", r.status().ToString().c_str()); return 1; }
    runner = *std::move(r);
  }
  if (!runner) Usage("--api must be auto, engine or model");
  if (!o.batch.empty() && api != "engine") Usage("--batch needs the engine API (--api engine, a build with bs_engine)");
  const double load_s = Since(t_load);

  const ModelConfig& c = runner->config();
  const size_t wbytes = runner->weight_bytes();
  const size_t kvbytes = runner->kv_cache_bytes();
  const size_t params = ParamCount(c);
  // The checkpoint's matrix dtype, from the safetensors header (only the header pages are read).
  DType wdtype = DType::kF32;
  {
    auto ckpt = CheckpointTensors::Open(o.model_dir);
    if (!ckpt.ok()) { std::fprintf(stderr, "engine_bench: %s\n", ckpt.status().ToString().c_str()); return 1; }
    auto t = ckpt->Get("model.layers.0.mlp.down_proj.weight");
    if (t.ok()) wdtype = t->dtype;
  }
  const size_t elem = DTypeSize(wdtype);
  const char* dtype = DTypeName(wdtype);
  std::printf("engine_bench: %s\n", o.model_dir.c_str());
  std::printf("  path     %s\n", runner->name().c_str());
  std::printf("  device   %s\n", runner->device().c_str());
  std::printf("  model    %s, %d layers, hidden %d, heads %d/%d kv, head_dim %d, ffn %d, vocab %d\n",
              c.architecture_name.c_str(), c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim,
              c.intermediate_size, c.vocab_size);
  std::printf("  weights  %.1fM parameters, %s, %.1f MiB (%zu bytes)\n", params / 1e6, dtype, MiB(wbytes), wbytes);
  std::printf("  KV cache %d tokens x %d layers, F32: %.1f MiB (%zu bytes)\n", o.kv_pool_tokens, c.num_layers,
              MiB(kvbytes), kvbytes);
  std::printf("  load     %.3f s\n", load_s);
  PrintMemory("after load");
#ifdef BRICKSERVE_BENCH_WITH_ENGINE
  if (o.only == "batch") return RunBatches(static_cast<EngineRunner&>(*runner).engine(), o);
#endif

  // Decode.
  const DecodeBytes db = BytesPerDecodeToken(c, elem, o.decode_prompt, o.decode_new);
  std::vector<double> decode_tps, decode_ttft, first_steps, later_steps, bw_samples, floor_ratios;
  CpuMonitor mon;
  std::pair<double, double> decode_load{0, 0}, prefill_load{0, 0};
  for (int r = 0; r <= o.runs && o.only != "prefill"; ++r) {
    if (r == 1) mon.Start();
    const double bw = r > 0 && !o.membw_bin.empty() ? SampleBandwidth(o.membw_bin) : o.membw_gbs;
    auto t = runner->Generate(RandomPrompt(o.decode_prompt, 100 + r), o.decode_new);
    if (!t.ok()) { std::fprintf(stderr, "engine_bench: decode: %s\n", t.status().ToString().c_str()); return 1; }
    const double tps = (t->new_tokens - 1) / t->decode_s;
    std::printf("  decode  run %d%s: %7.2f tok/s  (%d tokens, decode %.3f s, ttft %.3f s)", r,
                r == 0 ? " (warm-up)" : "          ", tps, t->new_tokens, t->decode_s, t->ttft_s);
    if (r > 0 && bw > 0) {
      const double ratio = (1.0 / tps) / (db.weights / (bw * 1e9));
      bw_samples.push_back(bw);
      floor_ratios.push_back(ratio);
      std::printf("  bandwidth %.2f GB/s -> %.2fx floor", bw, ratio);
    }
    std::printf("\n");
    if (r == 0) {
      // Sanity: random weights give varied greedy tokens; one repeated id would hint at NaN logits.
      std::vector<int32_t> u = t->ids;
      std::sort(u.begin(), u.end());
      std::printf("          warm-up generated %zu distinct ids of %zu (first: %d %d %d %d)\n",
                  static_cast<size_t>(std::unique(u.begin(), u.end()) - u.begin()), t->ids.size(), t->ids[0],
                  t->ids[1], t->ids[2], t->ids[3]);
      PrintMemory("after decode warm-up");
      continue;
    }
    decode_tps.push_back(tps);
    decode_ttft.push_back(t->ttft_s);
    // The first steps after a prefill (OpenBLAS threads may still be spinning) vs the rest.
    for (size_t i = 0; i < t->step_s.size(); ++i) (i < 4 ? first_steps : later_steps).push_back(t->step_s[i]);
  }
  if (o.only != "prefill") decode_load = mon.Stop();
  PrintMemory("after decode");

  // Prefill.
  std::vector<double> prefill_tps;
  for (int r = 0; r <= o.runs && o.only != "decode"; ++r) {
    if (r == 1) mon.Start();
    auto t = runner->Generate(RandomPrompt(o.prefill_prompt, 200 + r), 1);
    if (!t.ok()) { std::fprintf(stderr, "engine_bench: prefill: %s\n", t.status().ToString().c_str()); return 1; }
    const double tps = o.prefill_prompt / t->ttft_s;
    std::printf("  prefill run %d%s: %7.2f tok/s  (%d tokens in %.3f s)\n", r, r == 0 ? " (warm-up)" : "          ",
                tps, o.prefill_prompt, t->ttft_s);
    if (r > 0) prefill_tps.push_back(tps);
  }
  if (o.only != "decode") prefill_load = mon.Stop();
  if (decode_tps.empty()) decode_tps = decode_ttft = {0};
  if (prefill_tps.empty()) prefill_tps = {0};
  PrintMemory("after prefill");
  auto mem = ProcStatus();
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  const size_t peak = mem["VmHWM"];
  const size_t maxrss = static_cast<size_t>(ru.ru_maxrss) * 1024;

  const Stats ds = Summarise(decode_tps), ps = Summarise(prefill_tps), ts = Summarise(decode_ttft);
  std::printf("\n");
  std::printf("  %-44s %12s %10s %10s %8s\n", "result (median of runs)", "median", "min", "max", "spread");
  std::printf("  %-44s %12.2f %10.2f %10.2f %7.1f%%\n",
              ("decode tok/s (prompt " + std::to_string(o.decode_prompt) + ", " + std::to_string(o.decode_new) +
               " new, batch 1)").c_str(), ds.median, ds.min, ds.max, 100 * ds.spread());
  std::printf("  %-44s %12.2f %10.2f %10.2f %7.1f%%\n", "decode ms/token", 1e3 / ds.median, 1e3 / ds.max,
              1e3 / ds.min, 100 * ds.spread());
  std::printf("  %-44s %12.3f %10.3f %10.3f %7.1f%%\n",
              ("time to first token s (prompt " + std::to_string(o.decode_prompt) + ")").c_str(), ts.median, ts.min,
              ts.max, 100 * ts.spread());
  std::printf("  %-44s %12.2f %10.2f %10.2f %7.1f%%\n",
              ("prefill tok/s (prompt " + std::to_string(o.prefill_prompt) + ")").c_str(), ps.median, ps.min, ps.max,
              100 * ps.spread());
  std::printf("  %-44s decode %.1f%%, prefill %.1f%% of the machine (steal %.1f%% / %.1f%%)\n",
              "other processes' CPU during the timed runs", 100 * decode_load.first, 100 * prefill_load.first,
              100 * decode_load.second, 100 * prefill_load.second);
  if (!first_steps.empty() && !later_steps.empty()) {
    std::printf("  %-44s %12.2f ms (steps 1-4: %.2f ms)\n", "decode step, median of steps 5+",
                Summarise(later_steps).median * 1e3, Summarise(first_steps).median * 1e3);
  }
  const double prefill_flops = 2.0 * (params - 2.0 * c.vocab_size * c.hidden_size) * o.prefill_prompt;
  std::printf("  %-44s %12.1f   (2 x non-embedding params x tokens, attention excluded)\n", "prefill GFLOP/s",
              prefill_flops * ps.median / o.prefill_prompt / 1e9);
  std::printf("\n  decode bytes per token: weights %.1f MiB (%zu B), KV reads %.1f MiB (avg context %.1f)\n",
              MiB(db.weights), db.weights, MiB(db.kv), o.decode_prompt + o.decode_new / 2.0);
  std::printf("  decode achieved: %.2f GB/s of weights (%.2f GB/s with KV reads)\n", db.weights * ds.median / 1e9,
              (db.weights + db.kv) * ds.median / 1e9);
  double floor_ratio = 0, membw = o.membw_gbs;
  if (!bw_samples.empty()) {
    // Each run against the bandwidth sampled just before it; the median of those ratios.
    const Stats bs = Summarise(bw_samples), rs = Summarise(floor_ratios);
    membw = bs.median;
    floor_ratio = rs.median;
    std::printf("  bandwidth sampled before each run: median %.2f GB/s (min %.2f, max %.2f)\n", bs.median, bs.min,
                bs.max);
    std::printf("  decode time / floor per run: median %.2fx (min %.2fx, max %.2fx)\n", rs.median, rs.min, rs.max);
  } else if (membw > 0) {
    floor_ratio = (1e3 / ds.median) / (db.weights / (membw * 1e9) * 1e3);
  }
  if (membw > 0) {
    const double floor_ms = db.weights / (membw * 1e9) * 1e3;
    const double floor_kv_ms = (db.weights + db.kv) / (membw * 1e9) * 1e3;
    std::printf("  decode floor at %.2f GB/s: %.2f ms/token = %.1f tok/s (weights); %.2f ms = %.1f tok/s (+KV)\n",
                membw, floor_ms, 1e3 / floor_ms, floor_kv_ms, 1e3 / floor_kv_ms);
    std::printf("  decode time / floor: %.2fx (target <= 1.5x: %s)\n", floor_ratio, floor_ratio <= 1.5 ? "met" : "MISSED");
  }
  const double rss_ratio = double(peak) / double(wbytes + kvbytes);
  std::printf("  peak RSS (VmHWM) %.1f MiB (ru_maxrss %.1f MiB) vs weights + KV %.1f MiB: %.3fx (target <= 1.2x: %s)\n",
              MiB(peak), MiB(maxrss), MiB(wbytes + kvbytes), rss_ratio, rss_ratio <= 1.2 ? "met" : "MISSED");
  std::printf("RESULT api=%s dtype=%s params=%zu weight_bytes=%zu kv_bytes=%zu decode_tok_s=%.3f decode_spread=%.4f "
              "prefill_tok_s=%.3f prefill_spread=%.4f ttft_s=%.4f peak_rss_bytes=%zu rss_ratio=%.4f "
              "decode_weight_bytes=%zu decode_kv_bytes=%zu membw_gbs=%.3f floor_ratio=%.4f foreign_cpu_decode=%.4f "
              "foreign_cpu_prefill=%.4f\n",
              api.c_str(), dtype, params, wbytes, kvbytes, ds.median, ds.spread(), ps.median, ps.spread(), ts.median,
              peak, rss_ratio, db.weights, db.kv, membw, floor_ratio, decode_load.first,
              prefill_load.first);
#ifdef BRICKSERVE_BENCH_WITH_ENGINE
  if (!o.batch.empty()) return RunBatches(static_cast<EngineRunner&>(*runner).engine(), o);
#endif
  return 0;
}

}  // namespace
}  // namespace brickserve

int main(int argc, char** argv) {
  brickserve::Options o = brickserve::ParseArgs(argc, argv);
  if (o.kernels) {
    if (!o.membw_bin.empty()) o.membw_gbs = brickserve::SampleBandwidth(o.membw_bin);
    return brickserve::RunKernels(o);
  }
  return brickserve::Run(o);
}
