// Emergent modules through the real server: a server started with a module set answers router
// policies (its greedy token equals the float64 masked-FFN reference's argmax), returns module
// traces, keeps server-wide usage counters, applies its default policy, refuses bad policies with
// the field and the limit while serving on, and refuses to start with a module set of another model.
// CI also runs it against an AddressSanitizer build of the server (BRICKSERVE_E2E_BINARY).
#include <fstream>

#include "gmock/gmock.h"
#include "nlohmann/json.hpp"
#include "server_fixture.h"

namespace brickserve::testing {
namespace {

using ::testing::HasSubstr;
using namespace std::chrono_literals;

std::string GoldenDir() { return std::string(BRICKSERVE_TEST_DATA_DIR) + "/modules_golden"; }

class ModulesE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    std::ifstream f(GoldenDir() + "/modules_reference.json");
    if (!f) GTEST_SKIP() << "no module golden data in " << GoldenDir() << " (the modules_golden_setup fixture writes it)";
    ref_ = nlohmann::json::parse(f);
  }
  void TearDown() override {
    if (server_ != nullptr) EXPECT_EQ(server_->Stop(60s), 0);
  }

  void Start(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--model", GoldenDir() + "/base", "--modules", GoldenDir() + "/modules.safetensors",
                                     "--listen", "127.0.0.1:0"};
    args.insert(args.end(), extra.begin(), extra.end());
    auto server = ServerProcess::Start(ServerBinary(), args, 120s);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    stub_ = v1::InferenceService::NewStub(grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials()));
  }

  // One greedy token after the reference prompt under `router`, with the module trace.
  v1::GenerateResponse Generate(const v1::RouterPolicy& router, grpc::Status* status, int max_new = 1) {
    v1::GenerateRequest req;
    for (int id : ref_["prompt"]) req.mutable_token_ids()->add_ids(id);
    req.set_max_new_tokens(max_new);
    req.set_ignore_eos(true);
    *req.mutable_router() = router;
    req.set_module_trace(true);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + 60s);
    v1::GenerateResponse resp;
    *status = stub_->Generate(&context, req, &resp);
    return resp;
  }

  static v1::RouterPolicy Policy(v1::RouterPolicy::Policy p, int k, float density,
                                 v1::RouterPolicy::Selector s = v1::RouterPolicy::SELECTOR_ROUTER) {
    v1::RouterPolicy r;
    r.set_policy(p);
    r.set_k(k);
    r.set_density(density);
    r.set_selector(s);
    return r;
  }

  int ReferenceArgmax(const std::string& case_name) const {
    for (const auto& c : ref_["cases"]) {
      if (c["name"] != case_name) continue;
      const std::vector<float> last = c["logits"].back();
      return static_cast<int>(std::max_element(last.begin(), last.end()) - last.begin());
    }
    ADD_FAILURE() << "no reference case " << case_name;
    return -1;
  }

  nlohmann::json ref_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<v1::InferenceService::Stub> stub_;
};

TEST_F(ModulesE2E, PoliciesFollowTheReferenceAndTracesCountTheModules) {
  Start();
  grpc::ClientContext info_context;
  v1::GetModelInfoResponse info;
  ASSERT_TRUE(stub_->GetModelInfo(&info_context, {}, &info).ok());
  EXPECT_EQ(info.num_modules(), ref_["num_modules"].get<int>());
  EXPECT_THAT(info.router_policies(), ::testing::Contains(v1::RouterPolicy::POLICY_DENSITY));

  struct Case {
    const char* name;
    v1::RouterPolicy router;
  };
  const std::vector<Case> cases = {
      {"dense", Policy(v1::RouterPolicy::POLICY_DENSE, 0, 0)},
      {"router_k3", Policy(v1::RouterPolicy::POLICY_TOP_K, 3, 0)},
      {"router_density_0.3", Policy(v1::RouterPolicy::POLICY_DENSITY, 0, 0.3f)},
      {"oracle_k2", Policy(v1::RouterPolicy::POLICY_TOP_K, 2, 0, v1::RouterPolicy::SELECTOR_ORACLE)},
      {"threshold_0.5", Policy(v1::RouterPolicy::POLICY_DENSITY, 0, 0.5f, v1::RouterPolicy::SELECTOR_THRESHOLD)},
  };
  const size_t prompt_len = ref_["prompt"].size();
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    grpc::Status status;
    const v1::GenerateResponse resp = Generate(c.router, &status);
    ASSERT_TRUE(status.ok()) << status.error_message();
    ASSERT_EQ(resp.tokens_size(), 1);
    EXPECT_EQ(resp.tokens(0).id(), ReferenceArgmax(c.name)) << "greedy token vs the masked float64 reference";
    const v1::ModuleUsage& trace = resp.usage().modules();
    ASSERT_EQ(trace.layers_size(), 3);
    EXPECT_EQ(trace.tokens(), prompt_len) << "the prompt's tokens (the generated one never ran through the model)";
    if (std::string(c.name) == "router_k3") {
      for (const auto& layer : trace.layers()) {
        uint64_t sum = 0;
        for (uint64_t n : layer.token_counts()) sum += n;
        EXPECT_EQ(sum, 3 * prompt_len);
      }
      EXPECT_LT(trace.density(), 0.5);
      EXPECT_THAT(trace.policy(), HasSubstr("top_k k=3"));
    }
    if (std::string(c.name) == "dense") EXPECT_DOUBLE_EQ(trace.density(), 1.0);
  }
  // The server's counters hold every finished request's usage.
  grpc::ClientContext stats_context;
  v1::GetServerStatsResponse stats;
  ASSERT_TRUE(stub_->GetServerStats(&stats_context, {}, &stats).ok());
  EXPECT_EQ(stats.module_usage().tokens(), cases.size() * prompt_len);
  EXPECT_EQ(stats.module_usage().layers_size(), 3);
}

TEST_F(ModulesE2E, BadPoliciesNameTheFieldAndTheServerServesOn) {
  Start();
  const int n = ref_["num_modules"];
  struct Bad {
    v1::RouterPolicy router;
    const char* mentions;
  };
  const std::vector<Bad> bad = {
      {Policy(v1::RouterPolicy::POLICY_TOP_K, 0, 0), "router.k must be in [1, 8]"},
      {Policy(v1::RouterPolicy::POLICY_TOP_K, n + 1, 0), "router.k must be in [1, 8]"},
      {Policy(v1::RouterPolicy::POLICY_DENSITY, 0, 0.0f), "router.density must be in (0, 1]"},
      {Policy(v1::RouterPolicy::POLICY_DENSITY, 0, 1.5f), "router.density must be in (0, 1]"},
      {Policy(v1::RouterPolicy::POLICY_TOP_K, 2, 0, v1::RouterPolicy::SELECTOR_THRESHOLD), "takes a density"},
  };
  for (const Bad& b : bad) {
    grpc::Status status;
    Generate(b.router, &status);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << b.mentions;
    EXPECT_THAT(status.error_message(), HasSubstr(b.mentions));
  }
  grpc::Status status;
  const v1::GenerateResponse ok = Generate(Policy(v1::RouterPolicy::POLICY_TOP_K, 3, 0), &status, 4);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(ok.tokens_size(), 4);
}

TEST_F(ModulesE2E, TheDefaultRouterAppliesToRequestsThatSetNone) {
  Start({"--default-router", "top_k:2"});
  grpc::Status status;
  const v1::GenerateResponse resp = Generate(v1::RouterPolicy(), &status);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_THAT(resp.usage().modules().policy(), HasSubstr("top_k k=2"));
  for (const auto& layer : resp.usage().modules().layers()) {
    uint64_t sum = 0;
    for (uint64_t n : layer.token_counts()) sum += n;
    EXPECT_EQ(sum, 2 * resp.usage().modules().tokens());
  }
}

TEST_F(ModulesE2E, TheServerRefusesToStartWithABadModuleSetOrDefault) {
  const std::string base = GoldenDir() + "/base";
  struct Bad {
    std::vector<std::string> args;
    const char* mentions;
  };
  const std::vector<Bad> bad = {
      {{"--modules", GoldenDir() + "/other_modules.safetensors"}, "another model"},
      {{"--modules", GoldenDir() + "/corrupt_modules.safetensors"}, "corrupt_modules.safetensors"},
      {{"--modules", GoldenDir() + "/bad_partition_modules.safetensors"}, "layers.0.modules"},
      {{"--default-router", "density:0.5"}, "needs a module set"},
      {{"--modules", GoldenDir() + "/modules.safetensors", "--default-router", "top_k:99"}, "router.k must be in"},
  };
  for (const Bad& b : bad) {
    std::vector<std::string> argv = {ServerBinary(), "serve", "--model", base, "--listen", "127.0.0.1:0"};
    argv.insert(argv.end(), b.args.begin(), b.args.end());
    auto run = RunCommand(argv, 60s);
    ASSERT_TRUE(run.ok()) << run.status();
    EXPECT_NE(run->exit_code, 0) << b.mentions;
    EXPECT_THAT(run->err, HasSubstr(b.mentions));
  }
}

}  // namespace
}  // namespace brickserve::testing
