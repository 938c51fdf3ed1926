#include "server/cli/serve_command.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "engine/cli/flags.h"
#include "engine/engine.h"
#include "server/config.h"
#include "server/server.h"

namespace brickserve {
namespace {

constexpr char kCommand[] = "brickserve serve";

// SIGINT/SIGTERM reach the main thread through a pipe. A handler, not sigwait: some threads (the
// BLAS pool) start before main and would not inherit a blocked mask, and the kernel may pick any
// thread that does not block the signal.
int g_signal_pipe[2] = {-1, -1};

void OnStopSignal(int signal_number) {
  const char byte = static_cast<char>(signal_number);
  [[maybe_unused]] ssize_t n = write(g_signal_pipe[1], &byte, 1);  // async-signal-safe
}

// Installs the handlers; a later signal while draining is absorbed (the grace period bounds it).
bool InstallStopHandlers() {
  if (pipe2(g_signal_pipe, O_CLOEXEC) != 0) return false;
  struct sigaction action = {};
  action.sa_handler = OnStopSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  return sigaction(SIGINT, &action, nullptr) == 0 && sigaction(SIGTERM, &action, nullptr) == 0;
}

// Blocks until a stop signal arrives; returns its number.
int WaitForStopSignal() {
  char byte = 0;
  while (read(g_signal_pipe[0], &byte, 1) != 1) {
  }
  return static_cast<unsigned char>(byte);
}

// The value of --config in argv, which must be read before the other flags so that they win.
std::string FindConfigFlag(int argc, char** argv, int first) {
  std::string path;
  for (int i = first; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--config" && i + 1 < argc) path = argv[++i];
    else if (arg.rfind("--config=", 0) == 0) path = std::string(arg.substr(9));
  }
  return path;
}

}  // namespace

absl::Status ParseServeFlags(int argc, char** argv, int first, v1::ServerConfig* config, std::string* usage) {
  std::string config_path = FindConfigFlag(argc, argv, first);
  if (!config_path.empty()) {
    auto loaded = LoadServerConfigFile(config_path);
    if (!loaded.ok()) return loaded.status();
    *config = *std::move(loaded);
  }
  // FlagSet binds plain variables: start them at the file's values, parse, copy back.
  v1::ServerConfig& c = *config;
  v1::ServerLimits& l = *c.mutable_limits();
  std::string model = c.model(), listen = c.listen(), device = c.device(), metrics_listen = c.metrics_listen(),
              modules = c.modules(), default_router = c.default_router();
  int threads = c.threads(), max_context = c.max_context(), max_batch = c.max_batch_tokens(),
      kv_tokens = c.kv_cache_tokens(), grace = c.shutdown_grace_s(), max_running = c.max_running_requests(),
      prefill_chunk = c.prefill_chunk_tokens(), max_step_ms = c.max_step_ms();
  int max_queued_tokens = static_cast<int>(l.max_queued_tokens());
  bool prefix_cache = !c.has_prefix_cache() || c.prefix_cache();
  float max_step_ratio = static_cast<float>(c.has_max_step_ratio() ? c.max_step_ratio() : EngineOptions{}.max_step_ratio);
  bool batch_invariant = !c.has_batch_invariant() || c.batch_invariant();
  int max_new = l.max_new_tokens(), default_new = l.default_max_new_tokens(), max_prompt = l.max_prompt_tokens(),
      max_stops = l.max_stop_strings(), max_stop_bytes = l.max_stop_string_bytes(),
      max_queued = l.max_queued_requests(), max_bytes = l.max_request_bytes();

  FlagSet flags(kCommand,
                "Serve a model over gRPC (brickserve.v1.InferenceService, grpc.health.v1, reflection).\n"
                "Flags override the --config file; 0 or empty means the default. Prints\n"
                "\"brickserve: listening on HOST:PORT\" once it accepts calls; stops on SIGINT/SIGTERM.");
  flags.String("config", &config_path, "server config, protobuf text format (brickserve.v1.ServerConfig)");
  flags.String("model", &model, "model directory in Hugging Face layout (required)");
  flags.String("listen", &listen, "address host:port; port 0 picks a free port (default 127.0.0.1:50051)");
  flags.String("metrics-listen", &metrics_listen,
               "HTTP host:port for /metrics, /healthz, /readyz (port 0 picks one; default: none)");
  flags.String("device", &device, "backend: cpu, cuda or auto (default cpu)");
  flags.Int("threads", &threads, "CPU threads for the engine (0 = all cores)");
  flags.String("modules", &modules, "module set (`brickserve modules build`): enables sparse router policies");
  flags.String("default-router", &default_router,
               "router policy of requests that set none: dense, top_k:K or density:D[:threshold] (default dense)");
  flags.Int("max-context", &max_context, "context length limit in tokens (0 = the model's)");
  flags.Int("max-batch-tokens", &max_batch, "tokens per forward step (0 = 512)");
  flags.Int("kv-cache-tokens", &kv_tokens, "KV cache size in tokens (0 = one full context)");
  flags.Int("max-new-tokens", &max_new, "cap of a request's max_new_tokens (0 = the context)");
  flags.Int("default-max-new-tokens", &default_new, "max_new_tokens when a request sets none (0 = 128)");
  flags.Int("max-prompt-tokens", &max_prompt, "longest prompt in tokens (0 = context - 1)");
  flags.Int("max-stop-strings", &max_stops, "stop strings per request (0 = 16)");
  flags.Int("max-stop-string-bytes", &max_stop_bytes, "bytes per stop string (0 = 256)");
  flags.Int("max-queued-requests", &max_queued, "requests waiting for the model before RESOURCE_EXHAUSTED (0 = 64)");
  flags.Int("max-queued-tokens", &max_queued_tokens, "prompt tokens waiting before RESOURCE_EXHAUSTED (0 = no limit)");
  flags.Int("max-running-requests", &max_running, "requests batched together (0 = 64)");
  flags.Int("prefill-chunk-tokens", &prefill_chunk,
            "prompt tokens a step adds while others decode (0 = max-batch-tokens; smaller = steadier streaming)");
  flags.Int("max-step-ms", &max_step_ms,
            "time target of a step while others decode: sizes prompt chunks from measured step times (0 = none)");
  flags.Float("max-step-ratio", &max_step_ratio,
              "without --max-step-ms: the step time target as a multiple of a lone decode step's time "
              "(default 2.5; 0 = no target)");
  flags.Bool("prefix-cache", &prefix_cache, "share the KV of common prompt prefixes (default true)");
  flags.Bool("batch-invariant", &batch_invariant,
             "output independent of batching, bit for bit (default true; false: faster CPU prefill)");
  flags.Int("max-request-bytes", &max_bytes, "largest request message (0 = 4 MiB)");
  flags.Int("shutdown-grace-s", &grace, "seconds in-flight calls get on SIGINT/SIGTERM (0 = 5)");
  if (absl::Status s = flags.Parse(argc, argv, first); !s.ok()) return s;
  if (flags.help_requested()) {
    *usage = flags.Usage();
    return absl::OkStatus();
  }
  c.set_model(model);
  c.set_listen(listen);
  c.set_metrics_listen(metrics_listen);
  c.set_device(device);
  c.set_threads(threads);
  c.set_modules(modules);
  c.set_default_router(default_router);
  c.set_max_context(max_context);
  c.set_max_batch_tokens(max_batch);
  c.set_kv_cache_tokens(kv_tokens);
  c.set_shutdown_grace_s(grace);
  c.set_max_running_requests(max_running);
  c.set_prefill_chunk_tokens(prefill_chunk);
  c.set_max_step_ms(max_step_ms);
  c.set_max_step_ratio(max_step_ratio);
  c.set_prefix_cache(prefix_cache);
  c.set_batch_invariant(batch_invariant);
  l.set_max_queued_tokens(max_queued_tokens);
  l.set_max_new_tokens(max_new);
  l.set_default_max_new_tokens(default_new);
  l.set_max_prompt_tokens(max_prompt);
  l.set_max_stop_strings(max_stops);
  l.set_max_stop_string_bytes(max_stop_bytes);
  l.set_max_queued_requests(max_queued);
  l.set_max_request_bytes(max_bytes);
  return NormalizeServerConfig(&c);
}

int ServeCommand(int argc, char** argv, int first) {
  v1::ServerConfig config;
  std::string usage;
  if (absl::Status s = ParseServeFlags(argc, argv, first, &config, &usage); !s.ok()) {
    std::cerr << kCommand << ": " << s.message() << "\n";
    return 2;
  }
  if (!usage.empty()) {
    std::cout << usage;
    return 0;
  }
  std::cerr << "brickserve: loading " << config.model() << "\n";
  auto engine = Engine::Load(ToEngineOptions(config));
  if (!engine.ok()) {
    std::cerr << kCommand << ": " << engine.status() << "\n";
    return 1;
  }
  const EngineInfo& info = (*engine)->info();
  std::cerr << absl::StrCat("brickserve: ", info.architecture, ", ", info.num_layers, " layers, vocabulary ",
                            info.vocab_size, ", context ", info.max_context, ", on ", info.device, "\n");
  if (!info.modules_path.empty()) {
    std::cerr << absl::StrCat("brickserve: module set ", info.modules_path, ": ", info.num_modules,
                              " modules per layer, ", info.module_bytes >> 20,
                              " MiB of routers and module-ordered FFN copies\n");
  }
  // Only now: a signal during the model load keeps its default effect (stop at once).
  if (!InstallStopHandlers()) {
    std::cerr << kCommand << ": cannot install signal handlers: " << std::strerror(errno) << "\n";
    return 1;
  }
  auto server = Server::Start(engine->get(), config);
  if (!server.ok()) {
    std::cerr << kCommand << ": " << server.status() << "\n";
    return 1;
  }
  // The lines on stdout: scripts and tests read the chosen ports from them ("listening on" last).
  if (!(*server)->metrics_address().empty()) {
    std::cout << "brickserve: metrics on " << (*server)->metrics_address() << std::endl;
  }
  std::cout << "brickserve: listening on " << (*server)->address() << std::endl;

  const int signal_number = WaitForStopSignal();
  const int grace_s = config.shutdown_grace_s() > 0 ? config.shutdown_grace_s() : 5;
  std::cerr << "brickserve: " << strsignal(signal_number) << ", shutting down (grace " << grace_s << " s)\n";
  (*server)->Shutdown(std::chrono::seconds(grace_s));
  server->reset();
  return 0;
}

}  // namespace brickserve
