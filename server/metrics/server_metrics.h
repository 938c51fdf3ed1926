// What brickserve publishes on /metrics: every gRPC call by method and status (counted by an
// interceptor, so no handler can forget), the engine's scheduler snapshot (queue, batch, KV
// cache, tokens, latency histograms) read at scrape time, and build info. Names follow the
// Prometheus conventions: a `brickserve_` prefix, units in the name, `_total` on counters.
#pragma once

#include <memory>
#include <string>

#include "bricks/registry.h"
#include "engine/engine.h"
#include "grpcpp/support/server_interceptor.h"
#include "grpcpp/support/status.h"
#include "server/metrics/metrics.h"

namespace brickserve {

class ServerMetrics {
 public:
  // `engine` and `bricks` must outlive this object.
  ServerMetrics(const Engine* engine, const BrickRegistry* bricks, const std::string& version);

  void RecordRpc(const std::string& method, grpc::StatusCode code, double seconds);
  // The exposition-format body of a scrape.
  std::string Scrape() const;
  metrics::Registry& registry() { return registry_; }

  // A server interceptor factory that calls RecordRpc for every finished call.
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> InterceptorFactory();

 private:
  std::vector<metrics::MetricFamily> CollectEngine() const;
  std::vector<metrics::MetricFamily> CollectBricks() const;

  const Engine* engine_;
  const BrickRegistry* bricks_;
  metrics::Registry registry_;
  metrics::Family<metrics::Counter>* rpcs_;
  metrics::Family<metrics::Histogram>* rpc_seconds_;
};

}  // namespace brickserve
