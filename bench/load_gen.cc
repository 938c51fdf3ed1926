// Load generator: replays N streamed generation requests against a running brickserve with Poisson
// arrivals and at most C in flight, then reports output throughput, time to first token,
// inter-token latency and end-to-end latency (p50/p99, measured at the client).
//
//   load_gen --target 127.0.0.1:50051 --requests 64 --concurrency 16 --rate 0 \
//            --prompt-tokens 64 --max-new-tokens 64
//
// Prompts are random token ids (distinct per request unless --shared-prefix-tokens), generation
// ignores EOS so every request produces exactly --max-new-tokens. Bounded: --requests and
// --max-seconds (after which in-flight calls are cancelled and counted as cut). Loopback targets
// only unless --allow-remote: a benchmark must not load someone else's server by accident.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <iostream>
#include <map>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "brickserve/v1/bricks.grpc.pb.h"
#include "brickserve/v1/inference.grpc.pb.h"
#include "engine/cli/flags.h"
#include "grpcpp/grpcpp.h"
#include "nlohmann/json.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using brickserve::v1::InferenceService;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

struct Options {
  std::string target = "127.0.0.1:50051";
  int requests = 64;
  int concurrency = 16;
  float rate = 0;  // requests per second; 0 = all arrive at once
  int prompt_tokens = 64;
  int shared_prefix_tokens = 0;
  int max_new_tokens = 64;
  float max_seconds = 600;
  int seed = 1;
  int priority = 0;
  bool allow_remote = false;
  bool json = false;
  std::string bricks;             // comma-separated: request i names bricks[i % n]
  std::string churn_brick;        // reloaded in a loop during the run (LoadBrick), alternating paths
  std::string churn_paths;        // comma-separated brick directories on the server
  int churn_interval_ms = 500;
  std::string admin_token;
};

struct RequestResult {
  grpc::StatusCode code = grpc::StatusCode::OK;
  std::string error;
  int tokens = 0;
  double ttft_s = -1, e2e_s = 0;
  std::vector<double> itl_s;
};

// Nearest-rank percentile of `v` (sorted in place); NaN when empty.
double Percentile(std::vector<double>& v, double p) {
  if (v.empty()) return std::nan("");
  std::sort(v.begin(), v.end());
  const size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
  return v[std::clamp<size_t>(rank, 1, v.size()) - 1];
}

bool IsLoopback(const std::string& target) {
  const std::string host = target.substr(0, target.rfind(':'));
  return host == "127.0.0.1" || host == "localhost" || host == "[::1]" || host.rfind("127.", 0) == 0;
}

// One streamed call; its deadline is the end of the run, so --max-seconds cuts it.
RequestResult RunOne(InferenceService::Stub* stub, const brickserve::v1::GenerateRequest& request,
                     Clock::time_point stop_at) {
  RequestResult out;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::duration_cast<std::chrono::system_clock::duration>(stop_at - Clock::now()));
  const Clock::time_point start = Clock::now();
  Clock::time_point last = start;
  auto reader = stub->GenerateStream(&context, request);
  brickserve::v1::GenerateStreamResponse m;
  while (reader->Read(&m)) {
    if (!m.has_piece() || m.piece().tokens_size() == 0) continue;
    const Clock::time_point now = Clock::now();
    const int k = m.piece().tokens_size();
    if (out.tokens == 0) {
      out.ttft_s = Seconds(now - start);
    } else {
      // A piece may carry several tokens (held back for a whole UTF-8 character): split its gap.
      for (int i = 0; i < k; ++i) out.itl_s.push_back(Seconds(now - last) / k);
    }
    out.tokens += k;
    last = now;
  }
  const grpc::Status status = reader->Finish();
  out.e2e_s = Seconds(Clock::now() - start);
  out.code = status.error_code();
  out.error = status.error_message();
  return out;
}

// Loads `o.churn_brick` from the next of `o.churn_paths` every interval until `stop`; returns the
// duration of each LoadBrick call (a brick update while the streams run).
std::vector<double> Churn(const Options& o, const std::shared_ptr<grpc::Channel>& channel, const std::atomic<bool>& stop,
                          int* failures) {
  auto bricks = brickserve::v1::Bricks::NewStub(channel);
  const std::vector<std::string> paths = absl::StrSplit(o.churn_paths, ',', absl::SkipEmpty());
  std::vector<double> took;
  for (size_t i = 0; !stop.load() && !paths.empty(); ++i) {
    brickserve::v1::LoadBrickRequest r;
    r.set_name(o.churn_brick);
    r.set_path(paths[i % paths.size()]);
    brickserve::v1::BrickInfo info;
    grpc::ClientContext context;
    if (!o.admin_token.empty()) context.AddMetadata("authorization", "Bearer " + o.admin_token);
    const Clock::time_point t0 = Clock::now();
    const grpc::Status st = bricks->LoadBrick(&context, r, &info);
    if (st.ok()) {
      took.push_back(Seconds(Clock::now() - t0));
    } else {
      ++*failures;
      std::cerr << "load_gen: LoadBrick " << r.path() << ": " << st.error_message() << "\n";
    }
    const auto until = Clock::now() + std::chrono::milliseconds(o.churn_interval_ms);
    while (!stop.load() && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return took;
}

int Run(const Options& o) {
  auto channel = grpc::CreateChannel(o.target, grpc::InsecureChannelCredentials());
  auto stub = InferenceService::NewStub(channel);
  brickserve::v1::GetModelInfoResponse info;
  {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    grpc::Status s = stub->GetModelInfo(&context, {}, &info);
    if (!s.ok()) {
      std::cerr << "load_gen: GetModelInfo on " << o.target << ": " << s.error_message() << "\n";
      return 1;
    }
  }
  // Random prompts over ordinary ids (above the usual special tokens), and Poisson arrival times.
  std::mt19937_64 rng(static_cast<uint64_t>(o.seed));
  std::uniform_int_distribution<int32_t> token(3, info.vocab_size() - 1);
  std::vector<int32_t> shared(static_cast<size_t>(o.shared_prefix_tokens));
  for (auto& t : shared) t = token(rng);
  const std::vector<std::string> brick_names = absl::StrSplit(o.bricks, ',', absl::SkipEmpty());
  std::vector<brickserve::v1::GenerateRequest> requests(static_cast<size_t>(o.requests));
  std::vector<double> arrival_s(requests.size(), 0.0);
  std::exponential_distribution<double> gap(o.rate > 0 ? o.rate : 1.0);
  double t = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    auto& r = requests[i];
    for (int32_t id : shared) r.mutable_token_ids()->add_ids(id);
    while (r.token_ids().ids_size() < o.prompt_tokens) r.mutable_token_ids()->add_ids(token(rng));
    r.set_max_new_tokens(o.max_new_tokens);
    r.set_ignore_eos(true);
    r.set_priority(o.priority);
    if (!brick_names.empty()) r.add_bricks(brick_names[i % brick_names.size()]);
    if (o.rate > 0) t += gap(rng);
    arrival_s[i] = t;
  }

  std::vector<RequestResult> results(requests.size());
  std::vector<char> sent(requests.size(), 0);  // not vector<bool>: workers write neighbours
  std::atomic<size_t> next{0};
  const Clock::time_point start = Clock::now();
  const Clock::time_point stop_at = start + std::chrono::duration_cast<Clock::duration>(
                                                std::chrono::duration<double>(o.max_seconds));
  std::atomic<bool> churn_stop{false};
  int churn_failures = 0;
  std::vector<double> churn_s;
  std::thread churn;
  if (!o.churn_brick.empty()) churn = std::thread([&] { churn_s = Churn(o, channel, churn_stop, &churn_failures); });
  std::vector<std::thread> workers;
  for (int w = 0; w < o.concurrency; ++w) {
    workers.emplace_back([&] {
      for (size_t i; (i = next.fetch_add(1)) < requests.size();) {
        const auto due = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(arrival_s[i]));
        std::this_thread::sleep_until(std::min(due, stop_at));
        if (Clock::now() >= stop_at) return;
        sent[i] = 1;
        results[i] = RunOne(stub.get(), requests[i], stop_at);
      }
    });
  }
  for (auto& w : workers) w.join();
  const double wall_s = Seconds(Clock::now() - start);
  churn_stop.store(true);
  if (churn.joinable()) churn.join();

  std::vector<double> ttft, itl, e2e;
  std::map<std::string, int> errors;
  int ok = 0, not_sent = 0;
  int64_t tokens = 0;
  for (size_t i = 0; i < results.size(); ++i) {
    const RequestResult& r = results[i];
    if (!sent[i]) {
      ++not_sent;
      continue;
    }
    tokens += r.tokens;
    if (r.ttft_s >= 0) ttft.push_back(r.ttft_s);
    itl.insert(itl.end(), r.itl_s.begin(), r.itl_s.end());
    if (r.code == grpc::StatusCode::OK) {
      ++ok;
      e2e.push_back(r.e2e_s);
    } else {
      ++errors[absl::StrCat("code ", static_cast<int>(r.code), ": ", r.error.substr(0, 120))];
    }
  }
  nlohmann::json report = {
      {"target", o.target}, {"model", info.model()}, {"device", info.device()},
      {"requests", o.requests}, {"concurrency", o.concurrency}, {"rate_rps", o.rate},
      {"prompt_tokens", o.prompt_tokens}, {"shared_prefix_tokens", o.shared_prefix_tokens},
      {"max_new_tokens", o.max_new_tokens}, {"ok", ok}, {"failed", o.requests - ok - not_sent},
      {"not_sent", not_sent}, {"wall_s", wall_s}, {"output_tokens", tokens},
      {"output_tokens_per_s", static_cast<double>(tokens) / wall_s},
      {"requests_per_s", ok / wall_s},
      {"ttft_p50_s", Percentile(ttft, 50)}, {"ttft_p99_s", Percentile(ttft, 99)},
      {"itl_p50_s", Percentile(itl, 50)}, {"itl_p99_s", Percentile(itl, 99)},
      {"e2e_p50_s", Percentile(e2e, 50)}, {"e2e_p99_s", Percentile(e2e, 99)}, {"errors", errors},
      {"bricks", o.bricks}, {"brick_loads", churn_s.size()}, {"brick_load_failures", churn_failures},
      {"brick_load_p50_s", Percentile(churn_s, 50)}, {"brick_load_max_s", Percentile(churn_s, 100)}};
  if (o.json) {
    std::cout << report.dump() << "\n";
  } else {
    std::cout << report.dump(2) << "\n";
  }
  return ok == o.requests ? 0 : 2;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  brickserve::FlagSet flags("load_gen",
                            "Replays streamed generation requests against a brickserve server (Poisson arrivals,\n"
                            "bounded concurrency) and reports throughput, TTFT, inter-token and end-to-end latency.");
  flags.String("target", &o.target, "server address host:port (loopback unless --allow-remote)");
  flags.Int("requests", &o.requests, "requests to send (1..100000)");
  flags.Int("concurrency", &o.concurrency, "most requests in flight (1..1024)");
  flags.Float("rate", &o.rate, "Poisson arrival rate in requests/s (0 = all at once)");
  flags.Int("prompt-tokens", &o.prompt_tokens, "prompt length in tokens");
  flags.Int("shared-prefix-tokens", &o.shared_prefix_tokens, "leading prompt tokens common to every request");
  flags.Int("max-new-tokens", &o.max_new_tokens, "tokens generated per request (EOS ignored)");
  flags.Float("max-seconds", &o.max_seconds, "stop sending and cancel what is in flight after this long");
  flags.Int("seed", &o.seed, "seed of prompts and arrival times");
  flags.Int("priority", &o.priority, "priority of every request");
  flags.Bool("allow-remote", &o.allow_remote, "allow a non-loopback target");
  flags.String("bricks", &o.bricks, "comma-separated brick names: request i names the (i mod n)-th");
  flags.String("churn-brick", &o.churn_brick, "a brick name to reload (LoadBrick) in a loop during the run");
  flags.String("churn-paths", &o.churn_paths, "comma-separated server-side brick directories the churn alternates");
  flags.Int("churn-interval-ms", &o.churn_interval_ms, "pause between two churn loads");
  flags.String("admin-token", &o.admin_token, "Bricks admin token, if the server has one");
  flags.Bool("json", &o.json, "one JSON line instead of an indented report");
  if (absl::Status s = flags.Parse(argc, argv, 1); !s.ok()) {
    std::cerr << s.message() << "\n" << flags.Usage();
    return 1;
  }
  if (flags.help_requested()) {
    std::cout << flags.Usage();
    return 0;
  }
  auto bad = [](const std::string& what) {
    std::cerr << "load_gen: " << what << "\n";
    return 1;
  };
  if (o.requests < 1 || o.requests > 100000) return bad("--requests must be in [1, 100000]");
  if (o.concurrency < 1 || o.concurrency > 1024) return bad("--concurrency must be in [1, 1024]");
  if (o.rate < 0) return bad("--rate must be >= 0");
  if (o.prompt_tokens < 1 || o.shared_prefix_tokens < 0 || o.shared_prefix_tokens > o.prompt_tokens) {
    return bad("need --prompt-tokens >= 1 and 0 <= --shared-prefix-tokens <= --prompt-tokens");
  }
  if (o.max_new_tokens < 1) return bad("--max-new-tokens must be >= 1");
  if (o.max_seconds <= 0 || o.max_seconds > 3600) return bad("--max-seconds must be in (0, 3600]");
  if (!o.allow_remote && !IsLoopback(o.target)) return bad("--target is not a loopback address (--allow-remote)");
  return Run(o);
}
