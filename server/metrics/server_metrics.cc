#include "server/metrics/server_metrics.h"

#include <chrono>

#include "server/metrics/text_serializer.h"

namespace brickserve {
namespace {

using metrics::ClientMetric;
using metrics::MetricFamily;
using metrics::MetricType;

// gRPC's canonical code names, as grpc-go and grpc-java export them in their metrics.
const char* CodeName(grpc::StatusCode code) {
  static const char* kNames[] = {"OK",
                                 "CANCELLED",
                                 "UNKNOWN",
                                 "INVALID_ARGUMENT",
                                 "DEADLINE_EXCEEDED",
                                 "NOT_FOUND",
                                 "ALREADY_EXISTS",
                                 "PERMISSION_DENIED",
                                 "RESOURCE_EXHAUSTED",
                                 "FAILED_PRECONDITION",
                                 "ABORTED",
                                 "OUT_OF_RANGE",
                                 "UNIMPLEMENTED",
                                 "INTERNAL",
                                 "UNAVAILABLE",
                                 "DATA_LOSS",
                                 "UNAUTHENTICATED"};
  const int i = static_cast<int>(code);
  return i >= 0 && i < static_cast<int>(std::size(kNames)) ? kNames[i] : "UNKNOWN";
}

// Call durations: unary calls take milliseconds, streamed generations up to many minutes.
const metrics::Histogram::BucketBoundaries& RpcBuckets() {
  static const auto* b = new metrics::Histogram::BucketBoundaries{
      0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320, 640};
  return *b;
}

MetricFamily Single(std::string name, std::string help, MetricType type, double value) {
  ClientMetric m;
  m.value = value;
  return {std::move(name), std::move(help), type, {m}};
}

MetricFamily FromLatency(std::string name, std::string help, const LatencyHistogram::Snapshot& s) {
  ClientMetric m;
  uint64_t cumulative = 0;
  for (size_t i = 0; i < s.counts.size(); ++i) {
    cumulative += s.counts[i];
    m.buckets.emplace_back(i < LatencyHistogram::kBounds.size() ? LatencyHistogram::kBounds[i] : INFINITY,
                           cumulative);
  }
  m.sample_count = s.count;
  m.sample_sum = s.sum;
  return {std::move(name), std::move(help), MetricType::kHistogram, {m}};
}

class RpcMetricsInterceptor : public grpc::experimental::Interceptor {
 public:
  RpcMetricsInterceptor(ServerMetrics* metrics, const char* method)
      : metrics_(metrics), method_(method != nullptr ? method : "unknown"), start_(std::chrono::steady_clock::now()) {}
  ~RpcMetricsInterceptor() override {
    // A call that ended without sending a status (the client went away first).
    if (!recorded_) metrics_->RecordRpc(method_, grpc::StatusCode::CANCELLED, Elapsed());
  }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      metrics_->RecordRpc(method_, methods->GetSendStatus().error_code(), Elapsed());
      recorded_ = true;
    }
    methods->Proceed();
  }

 private:
  double Elapsed() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }
  ServerMetrics* metrics_;
  std::string method_;
  std::chrono::steady_clock::time_point start_;
  bool recorded_ = false;
};

class RpcMetricsFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit RpcMetricsFactory(ServerMetrics* metrics) : metrics_(metrics) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(grpc::experimental::ServerRpcInfo* info) override {
    return new RpcMetricsInterceptor(metrics_, info->method());
  }

 private:
  ServerMetrics* metrics_;
};

}  // namespace

ServerMetrics::ServerMetrics(const Engine* engine, const BrickRegistry* bricks, const std::string& version)
    : engine_(engine), bricks_(bricks) {
  rpcs_ = &metrics::BuildCounter()
               .Name("brickserve_grpc_requests_total")
               .Help("gRPC calls finished, by full method name and status code.")
               .Register(registry_);
  rpc_seconds_ = &metrics::BuildHistogram()
                      .Name("brickserve_grpc_request_duration_seconds")
                      .Help("gRPC call duration from arrival to status, by method (a generation's end-to-end latency).")
                      .Register(registry_);
  const EngineInfo& info = engine->info();
  metrics::BuildGauge()
      .Name("brickserve_build_info")
      .Help("Always 1; the labels say which build serves which model on which device.")
      .Register(registry_)
      .Add({{"version", version}, {"architecture", info.architecture}, {"device", info.device}})
      .Set(1);
  const double start = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  metrics::BuildGauge()
      .Name("process_start_time_seconds")
      .Help("Start time of the process since the Unix epoch in seconds.")
      .Register(registry_)
      .Add({})
      .Set(start);
  registry_.AddCollector([this] { return CollectEngine(); });
  registry_.AddCollector([this] { return CollectBricks(); });
}

void ServerMetrics::RecordRpc(const std::string& method, grpc::StatusCode code, double seconds) {
  rpcs_->Add({{"method", method}, {"code", CodeName(code)}}).Increment();
  rpc_seconds_->Add({{"method", method}}, RpcBuckets()).Observe(seconds);
}

std::string ServerMetrics::Scrape() const { return metrics::SerializeText(registry_.Collect()); }

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> ServerMetrics::InterceptorFactory() {
  return std::make_unique<RpcMetricsFactory>(this);
}

std::vector<MetricFamily> ServerMetrics::CollectEngine() const {
  const EngineStats s = engine_->Stats();
  constexpr auto kG = MetricType::kGauge;
  constexpr auto kC = MetricType::kCounter;
  auto d = [](auto v) { return static_cast<double>(v); };
  std::vector<MetricFamily> out = {
      Single("brickserve_queued_requests", "Requests waiting for the scheduler.", kG, d(s.queued_requests)),
      Single("brickserve_queued_prompt_tokens", "Prompt tokens of the waiting requests.", kG,
             d(s.queued_prompt_tokens)),
      Single("brickserve_running_requests", "Requests in the running batch.", kG, d(s.running_requests)),
      Single("brickserve_kv_cache_blocks_capacity", "KV cache blocks in the pool.", kG, d(s.kv_blocks_total)),
      Single("brickserve_kv_cache_blocks_used", "KV cache blocks referenced by running requests.", kG,
             d(s.kv_blocks_in_use)),
      Single("brickserve_kv_cache_blocks_cached", "KV cache blocks holding reusable prompt-prefix KV.", kG,
             d(s.kv_blocks_cached)),
      Single("brickserve_kv_cache_block_size_tokens", "Tokens per KV cache block.", kG, d(s.kv_block_size)),
      Single("brickserve_requests_admitted_total", "Requests that entered the running batch.", kC,
             d(s.requests_admitted)),
      Single("brickserve_requests_rejected_total", "Requests the scheduler refused (queue full, draining).", kC,
             d(s.requests_rejected)),
      Single("brickserve_preemptions_total", "Requests preempted when the KV pool ran dry (recomputed later).", kC,
             d(s.preemptions)),
      Single("brickserve_prompt_tokens_total", "Prompt tokens of admitted requests.", kC, d(s.prompt_tokens)),
      Single("brickserve_prefix_cache_hit_tokens_total", "Prompt tokens whose KV came from the prefix cache.", kC,
             d(s.prefix_cache_hit_tokens)),
      Single("brickserve_prefill_tokens_total", "Tokens run through the model to fill the KV cache.", kC,
             d(s.prefill_tokens)),
      Single("brickserve_generation_tokens_total", "Tokens generated.", kC, d(s.generated_tokens)),
      Single("brickserve_engine_steps_total", "Forward steps of the scheduler.", kC, d(s.steps)),
      FromLatency("brickserve_time_to_first_token_seconds", "Time from submission to the first generated token.",
                  s.time_to_first_token),
      FromLatency("brickserve_inter_token_latency_seconds", "Time between consecutive generated tokens.",
                  s.inter_token_latency),
      FromLatency("brickserve_request_queue_time_seconds", "Time from submission to first admission.",
                  s.queue_time),
      FromLatency("brickserve_engine_step_seconds", "Duration of one forward step of the running batch.",
                  s.step_time),
      Single("brickserve_engine_step_target_seconds",
             "Time target prompt chunks are sized to while requests decode (0: none).", kG, s.step_time_target_s),
  };
  // Emergent modules (with a module set): how much of the FFN ran, and every module's token count
  // (layers x modules series: a few thousand for a 7B model, the price of seeing unused modules).
  if (const ModuleTrace& u = s.module_usage; !u.empty()) {
    out.push_back(Single("brickserve_ffn_neurons_computed_total",
                         "FFN neurons computed, over layers and tokens of finished requests.", kC,
                         d(u.neurons_computed)));
    out.push_back(Single("brickserve_ffn_neurons_dense_total",
                         "FFN neurons the dense model would have computed for the same tokens.", kC,
                         d(u.neurons_total)));
    MetricFamily modules{"brickserve_module_tokens_total", "Tokens that used each FFN module, by layer.", kC, {}};
    for (int l = 0; l < u.num_layers; ++l) {
      for (int m = 0; m < u.num_modules; ++m) {
        modules.metrics.push_back({{{"layer", std::to_string(l)}, {"module", std::to_string(m)}}, d(u.at(l, m))});
      }
    }
    out.push_back(std::move(modules));
  }
  return out;
}

std::vector<MetricFamily> ServerMetrics::CollectBricks() const {
  const BrickRegistryStats s = bricks_->stats();
  constexpr auto kG = MetricType::kGauge;
  constexpr auto kC = MetricType::kCounter;
  auto d = [](auto v) { return static_cast<double>(v); };
  MetricFamily by_state{"brickserve_bricks", "Bricks in the registry, by state (ready, evicted).", kG, {}};
  by_state.metrics.push_back({{{"state", "ready"}}, d(s.bricks_ready)});
  by_state.metrics.push_back({{{"state", "evicted"}}, d(s.bricks_evicted)});
  MetricFamily failures{"brickserve_brick_load_failures_total",
                        "Brick loads (admin, start-up, brick_dir, reload after eviction) that failed, by brick name.",
                        kC, {}};
  for (const auto& [name, n] : s.load_failures_by_brick) failures.metrics.push_back({{{"brick", name}}, d(n)});
  MetricFamily served{"brickserve_brick_requests_total", "Requests that named each loaded brick.", kC, {}};
  for (const BrickStatus& b : bricks_->List()) served.metrics.push_back({{{"brick", b.name}}, d(b.requests_served)});
  return {
      std::move(by_state),
      Single("brickserve_brick_resident_bytes",
             "Device memory of live bricks (including old versions that running requests still hold).", kG,
             d(s.resident_bytes)),
      Single("brickserve_brick_memory_budget_bytes", "Brick memory budget (0: none).", kG,
             d(bricks_->memory_budget_bytes())),
      Single("brickserve_brick_loads_total", "Bricks loaded or updated.", kC, d(s.loads)),
      Single("brickserve_brick_unloads_total", "Bricks unloaded.", kC, d(s.unloads)),
      Single("brickserve_brick_evictions_total", "Idle bricks evicted under the memory budget.", kC, d(s.evictions)),
      Single("brickserve_brick_reloads_total", "Evicted bricks reloaded when a request named them.", kC,
             d(s.reloads)),
      std::move(failures),
      std::move(served),
      FromLatency("brickserve_brick_load_seconds",
                  "Time to load a brick (read, SHA-256, validate, bind to the device), reloads included.",
                  s.load_seconds),
  };
}

}  // namespace brickserve
