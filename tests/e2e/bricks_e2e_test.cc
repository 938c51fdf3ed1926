// Bricks through the real server: the admin API (load, update, unload, list, errors, the admin
// token), requests naming bricks with weights, and hot-plug under load: 16 streams run for 20 s
// (BRICKSERVE_HOTPLUG_SECONDS) while a brick is loaded, updated and unloaded in a loop; every stream
// completes with the output of the brick version it started with. CI also runs this test against
// an AddressSanitizer build of the server (BRICKSERVE_E2E_BINARY), whose exit code reports leaks.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <map>
#include <thread>

#include "brickserve/v1/bricks.grpc.pb.h"
#include "gmock/gmock.h"
#include "server_fixture.h"
#include "tests/bricks/lora_golden_util.h"

namespace brickserve::testing {
namespace {

using ::testing::HasSubstr;
using namespace std::chrono_literals;

constexpr char kToken[] = "s3cret-admin-token";

class BricksE2E : public ::testing::Test {
 protected:
  void SetUp() override {
    golden_ = LoadLoraGolden();
    BS_SKIP_WITHOUT_LORA_GOLDEN(golden_);
    const std::string dir = ::testing::TempDir() + "/bricks_e2e_" + std::to_string(getpid());
    std::filesystem::create_directories(dir);
    std::ofstream(dir + "/token") << kToken << "\n";
    std::ofstream(dir + "/server.textproto")
        << "admin_token_file: \"" << dir << "/token\"\n"
        << "bricks { name: \"start\" path: \"" << golden_.adapter_dir("b_r16_all") << "\" }\n"
        << "brick_roots: \"" << golden_.dir << "/adapters/\"\n";
    auto server = ServerProcess::Start(ServerBinary(),
                                       {"--config", dir + "/server.textproto", "--model", golden_.base_dir("base"),
                                        "--listen", "127.0.0.1:0", "--shutdown-grace-s", "30"},
                                       120s);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    auto channel = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
    infer_ = v1::InferenceService::NewStub(channel);
    bricks_ = v1::Bricks::NewStub(channel);
  }
  void TearDown() override {
    // SIGTERM must end the server cleanly; under ASan a leak would make the exit code non-zero.
    if (server_ != nullptr) EXPECT_EQ(server_->Stop(60s), 0);
  }

  std::unique_ptr<grpc::ClientContext> Admin(const std::string& token = kToken) {
    auto c = Context();
    if (!token.empty()) c->AddMetadata("authorization", "Bearer " + token);
    return c;
  }
  grpc::Status Load(const std::string& name, const std::string& path, v1::BrickInfo* info,
                    const std::string& sha256 = "") {
    v1::LoadBrickRequest r;
    r.set_name(name);
    r.set_path(path);
    r.set_sha256(sha256);
    return bricks_->LoadBrick(Admin().get(), r, info);
  }
  grpc::Status Unload(const std::string& name) {
    v1::UnloadBrickRequest r;
    r.set_name(name);
    v1::UnloadBrickResponse resp;
    return bricks_->UnloadBrick(Admin().get(), r, &resp);
  }
  v1::GenerateRequest Request(std::vector<int32_t> prompt, std::vector<std::string> bricks, int max_new = 16) {
    v1::GenerateRequest r;
    for (int32_t id : prompt) r.mutable_token_ids()->add_ids(id);
    for (auto& b : bricks) r.add_bricks(b);
    r.set_max_new_tokens(max_new);
    r.set_ignore_eos(true);
    return r;
  }
  static std::vector<int32_t> Ids(const v1::GenerateResponse& r) {
    std::vector<int32_t> ids;
    for (const auto& t : r.tokens()) ids.push_back(t.id());
    return ids;
  }

  LoraGolden golden_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<v1::InferenceService::Stub> infer_;
  std::unique_ptr<v1::Bricks::Stub> bricks_;
};

TEST_F(BricksE2E, AdminApiLoadsListsGetsAndUnloads) {
  v1::ListBricksResponse list;
  ASSERT_TRUE(bricks_->ListBricks(Admin().get(), {}, &list).ok());
  ASSERT_EQ(list.bricks_size(), 1);
  EXPECT_EQ(list.bricks(0).name(), "start");
  EXPECT_EQ(list.bricks(0).state(), v1::BrickInfo::STATE_READY);
  EXPECT_EQ(list.resident_bytes(), list.bricks(0).size_bytes());

  v1::BrickInfo info;
  ASSERT_TRUE(Load("x", golden_.adapter_dir("a_r8_qv"), &info).ok());
  EXPECT_EQ(info.name(), "x");
  EXPECT_EQ(info.kind(), v1::BrickInfo::KIND_LORA);
  EXPECT_EQ(info.version().size(), 12u);
  EXPECT_EQ(info.sha256().substr(0, 12), info.version());
  EXPECT_THAT(info.plugs_into(), ::testing::ElementsAre("q_proj", "v_proj"));
  EXPECT_GT(info.size_bytes(), 0u);
  EXPECT_GT(info.load_time_unix_s(), 1.7e9);

  v1::GetModelInfoResponse model;
  ASSERT_TRUE(infer_->GetModelInfo(Context().get(), {}, &model).ok());
  EXPECT_THAT(model.bricks(), ::testing::ElementsAre("start", "x"));
  EXPECT_EQ(model.limits().max_bricks_per_request(), 8);

  v1::GenerateResponse out;
  ASSERT_TRUE(infer_->Generate(Context().get(), Request({1, 5, 6}, {"x"}), &out).ok());
  v1::GetBrickRequest get;
  get.set_name("x");
  v1::BrickInfo got;
  ASSERT_TRUE(bricks_->GetBrick(Admin().get(), get, &got).ok());
  EXPECT_EQ(got.requests_served(), 1u);
  // The engine lets go of a request (and its bricks) just after its response is sent.
  EXPECT_TRUE(Eventually([&] { return bricks_->GetBrick(Admin().get(), get, &got).ok() && got.idle(); }));

  ASSERT_TRUE(Unload("x").ok());
  const grpc::Status gone = bricks_->GetBrick(Admin().get(), get, &got);
  EXPECT_EQ(gone.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(gone.error_message(), HasSubstr("brick \"x\" is not loaded"));
}

TEST_F(BricksE2E, BadBricksAreRefusedAndHarmNothing) {
  v1::GenerateResponse before, after;
  ASSERT_TRUE(infer_->Generate(Context().get(), Request({1, 9, 8, 7}, {"start"}), &before).ok());
  v1::BrickInfo info;
  grpc::Status s = Load("start", golden_.adapter_dir("bad_shape"), &info);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(s.error_message(), HasSubstr("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"));
  EXPECT_THAT(s.error_message(), HasSubstr("[8, 32]"));
  EXPECT_THAT(s.error_message(), HasSubstr("[8, 64]"));
  s = Load("t", golden_.adapter_dir("bad_truncated"), &info);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr(golden_.adapter_dir("bad_truncated")));
  s = Load("t", golden_.adapter_dir("bad_bin_only"), &info);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("adapter_model.bin"));
  s = Load("t", "relative/dir", &info);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("absolute path"));
  s = Load("t", golden_.adapter_dir("no_such_brick"), &info);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  // Only inside brick_roots, whatever ".." or a symlink says.
  s = Load("t", "/etc", &info);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(s.error_message(), HasSubstr("outside brick_roots"));
  s = Load("t", golden_.dir + "/adapters/../base", &info);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  const std::string link = golden_.dir + "/adapters/link_out_" + std::to_string(getpid());
  std::filesystem::remove(link);
  std::filesystem::create_directory_symlink(golden_.dir + "/base", link);
  s = Load("t", link, &info);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  std::filesystem::remove(link);
  s = Load("start", golden_.adapter_dir("a_r8_qv"), &info, std::string(64, 'f'));
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("sha256"));
  s = Load("bad name!", golden_.adapter_dir("a_r8_qv"), &info);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Unload("nope").error_code(), grpc::StatusCode::NOT_FOUND);
  // The loaded brick is untouched: same version, same output.
  ASSERT_TRUE(infer_->Generate(Context().get(), Request({1, 9, 8, 7}, {"start"}), &after).ok());
  EXPECT_EQ(Ids(after), Ids(before));
  EXPECT_EQ(after.usage().bricks(0).version(), before.usage().bricks(0).version());
}

// A load whose file never arrives (a FIFO with no writer: the read blocks, as on a hung network
// mount) holds only itself: more of them than gRPC has callback threads, and generation, listing
// and other calls still answer. When the writers come, the stuck loads fail with an error.
TEST_F(BricksE2E, StuckLoadsBlockNoOtherCall) {
  constexpr int kStuck = 4;
  std::vector<std::string> fifos;
  std::vector<std::thread> loads;
  std::vector<grpc::Status> statuses(kStuck);
  std::atomic<int> done{0};
  for (int i = 0; i < kStuck; ++i) {
    const std::string dir = golden_.dir + "/adapters/stuck_" + std::to_string(getpid()) + "_" + std::to_string(i);
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    std::filesystem::copy_file(golden_.adapter_dir("a_r8_qv") + "/adapter_config.json", dir + "/adapter_config.json");
    fifos.push_back(dir + "/adapter_model.safetensors");
    ASSERT_EQ(mkfifo(fifos.back().c_str(), 0600), 0) << fifos.back();
    loads.emplace_back([this, i, dir, &statuses, &done] {
      v1::BrickInfo info;
      statuses[i] = Load("stuck" + std::to_string(i), dir, &info);
      ++done;
    });
  }
  std::this_thread::sleep_for(500ms);  // the loads are now blocked reading their FIFOs
  auto context = Context();
  context->set_deadline(std::chrono::system_clock::now() + 60s);
  v1::GenerateResponse out;
  const grpc::Status gen = infer_->Generate(context.get(), Request({1, 9, 8, 7}, {"start"}), &out);
  EXPECT_TRUE(gen.ok()) << gen.error_message();
  EXPECT_EQ(out.tokens_size(), 16);
  v1::ListBricksResponse list;
  auto admin = Admin();
  admin->set_deadline(std::chrono::system_clock::now() + 30s);
  EXPECT_TRUE(bricks_->ListBricks(admin.get(), v1::ListBricksRequest(), &list).ok());
  // Unblock each load whenever it opens its FIFO (a queued load opens it later, and a load opens the
  // file more than once) by opening and closing the other end: the load reads an empty file and
  // fails. Non-blocking opens, so a load that never starts fails the test instead of hanging it.
  const auto give_up = std::chrono::steady_clock::now() + 60s;
  while (done < kStuck && std::chrono::steady_clock::now() < give_up) {
    for (const std::string& fifo : fifos) {
      const int fd = open(fifo.c_str(), O_WRONLY | O_NONBLOCK);
      if (fd >= 0) close(fd);  // else ENXIO: no reader now
    }
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_EQ(done.load(), kStuck) << "loads still stuck 60 s after their files were offered";
  for (auto& t : loads) t.join();
  for (int i = 0; i < kStuck; ++i) {
    EXPECT_FALSE(statuses[i].ok()) << "stuck load " << i;
    EXPECT_NE(statuses[i].error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << statuses[i].error_message();
    std::filesystem::remove_all(std::filesystem::path(fifos[i]).parent_path());
  }
}

TEST_F(BricksE2E, AdminCallsNeedTheToken) {
  v1::ListBricksResponse list;
  grpc::Status s = bricks_->ListBricks(Admin("").get(), {}, &list);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(s.error_message(), HasSubstr("authorization: Bearer"));
  s = bricks_->ListBricks(Admin("wrong").get(), {}, &list);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  v1::UnloadBrickRequest r;
  r.set_name("start");
  v1::UnloadBrickResponse resp;
  EXPECT_EQ(bricks_->UnloadBrick(Admin("").get(), r, &resp).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  // Generation needs no token, and the brick is still there.
  v1::GenerateResponse out;
  EXPECT_TRUE(infer_->Generate(Context().get(), Request({1, 5}, {"start"}), &out).ok());
}

TEST_F(BricksE2E, RequestsApplyTheirBricksWithWeights) {
  v1::BrickInfo info;
  ASSERT_TRUE(Load("d", golden_.adapter_dir("d_r64_attn_f16"), &info).ok());
  const std::vector<int32_t> prompt = golden_.cases[0].prompt_ids;
  v1::GenerateResponse none, start, start_again, both, half;
  ASSERT_TRUE(infer_->Generate(Context().get(), Request(prompt, {}), &none).ok());
  ASSERT_TRUE(infer_->Generate(Context().get(), Request(prompt, {"start"}), &start).ok());
  ASSERT_TRUE(infer_->Generate(Context().get(), Request(prompt, {"start"}), &start_again).ok());
  auto combo = Request(prompt, {"start", "d"});
  combo.add_brick_weights(1.0f);
  combo.add_brick_weights(-0.5f);
  ASSERT_TRUE(infer_->Generate(Context().get(), combo, &both).ok());
  auto weighted = Request(prompt, {"start"});
  weighted.add_brick_weights(0.5f);
  ASSERT_TRUE(infer_->Generate(Context().get(), weighted, &half).ok());
  EXPECT_NE(Ids(none), Ids(start));
  EXPECT_EQ(Ids(start), Ids(start_again));
  EXPECT_NE(Ids(both), Ids(start));
  EXPECT_NE(Ids(half), Ids(start));
  EXPECT_EQ(none.usage().bricks_size(), 0);
  ASSERT_EQ(both.usage().bricks_size(), 2);
  EXPECT_EQ(both.usage().bricks(1).name(), "d");
  EXPECT_EQ(both.usage().bricks(1).version(), info.version());
  EXPECT_FLOAT_EQ(both.usage().bricks(1).weight(), -0.5f);
  v1::GenerateResponse missing;
  const grpc::Status s = infer_->Generate(Context().get(), Request(prompt, {"start", "ghost"}), &missing);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(s.error_message(), HasSubstr("brick \"ghost\" is not loaded"));
}

TEST_F(BricksE2E, CommandLineAdministersAndUsesBricks) {
  const std::string token_file = ::testing::TempDir() + "/bricks_e2e_" + std::to_string(getpid()) + "/token";
  auto run = [&](std::vector<std::string> args) {
    args.insert(args.begin(), BRICKSERVE_BINARY);
    args.insert(args.end(), {"--server", server_->address()});
    auto r = RunCommand(args, 60s);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : CommandResult{};
  };
  CommandResult r = run({"bricks", "load", "--name", "cli", "--path", golden_.adapter_dir("a_r8_qv"), "--token-file",
                         token_file});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("name: cli"));
  EXPECT_THAT(r.out, HasSubstr("plugs into: q_proj, v_proj"));
  r = run({"bricks", "list", "--token-file", token_file});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("start"));
  EXPECT_THAT(r.out, HasSubstr("cli"));
  r = run({"bricks", "list"});  // no token
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("UNAUTHENTICATED"));
  r = run({"generate", "--prompt-ids", "1,5,6", "--max-new-tokens", "4", "--brick", "cli:0.5", "--brick", "start",
           "--stats"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_THAT(r.err, HasSubstr("brick: cli version"));
  EXPECT_THAT(r.err, HasSubstr("weight 0.5"));
  EXPECT_THAT(r.err, HasSubstr("brick: start version"));
  r = run({"bricks", "unload", "--name", "cli", "--token-file", token_file});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = run({"bricks", "get", "--name", "cli", "--token-file", token_file});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr("NOT_FOUND"));
}

TEST_F(BricksE2E, HotPlugUnderLoadKeepsEveryStreamOnItsVersion) {
  const char* env = std::getenv("BRICKSERVE_HOTPLUG_SECONDS");
  const auto duration = std::chrono::seconds(env != nullptr ? std::atoi(env) : 20);
  const std::string path_a = golden_.adapter_dir("a_r8_qv"), path_b = golden_.adapter_dir("b_r16_all");
  constexpr int kStreams = 16, kTokens = 24;
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < kStreams; ++i) prompts.push_back({1, 3 + i, 40 + i, 7, 100 + 3 * i});

  // The expected output of every prompt under each version, computed before the churn.
  std::map<std::string, std::vector<std::vector<int32_t>>> want;  // version -> per prompt
  for (const std::string& path : {path_a, path_b}) {
    v1::BrickInfo info;
    ASSERT_TRUE(Load("hot", path, &info).ok());
    for (const auto& p : prompts) {
      v1::GenerateResponse r;
      ASSERT_TRUE(infer_->Generate(Context().get(), Request(p, {"hot"}, kTokens), &r).ok());
      want[info.version()].push_back(Ids(r));
    }
  }
  ASSERT_EQ(want.size(), 2u);
  ASSERT_NE(want.begin()->second, want.rbegin()->second);

  std::atomic<bool> stop{false};
  std::atomic<int> completed{0}, not_found{0};
  std::map<std::string, std::atomic<int>> per_version;
  for (const auto& [v, _] : want) per_version[v] = 0;
  std::vector<std::string> failures;
  std::mutex failures_mu;
  auto fail = [&](const std::string& what) {
    std::lock_guard<std::mutex> lock(failures_mu);
    if (failures.size() < 20) failures.push_back(what);
  };
  std::vector<std::thread> streams;
  for (int i = 0; i < kStreams; ++i) {
    streams.emplace_back([&, i] {
      while (!stop.load()) {
        auto context = Context(120s);
        auto reader = infer_->GenerateStream(context.get(), Request(prompts[i], {"hot"}, kTokens));
        std::vector<int32_t> ids;
        std::string version;
        v1::GenerateStreamResponse m;
        while (reader->Read(&m)) {
          for (const auto& t : m.piece().tokens()) ids.push_back(t.id());
          if (m.has_final() && m.final().usage().bricks_size() == 1) version = m.final().usage().bricks(0).version();
        }
        const grpc::Status s = reader->Finish();
        if (s.error_code() == grpc::StatusCode::NOT_FOUND) {  // "hot" was unloaded at admission
          not_found.fetch_add(1);
          std::this_thread::sleep_for(5ms);
          continue;
        }
        if (!s.ok()) {
          fail("stream " + std::to_string(i) + ": " + s.error_message());
          continue;
        }
        auto it = want.find(version);
        if (it == want.end()) {
          fail("stream " + std::to_string(i) + " reports unknown version \"" + version + "\"");
        } else if (it->second[i] != ids) {
          fail("stream " + std::to_string(i) + " output differs from version " + version + " alone");
        } else {
          per_version[version].fetch_add(1);
        }
        completed.fetch_add(1);
      }
    });
  }
  int cycles = 0;
  const auto end = std::chrono::steady_clock::now() + duration;
  while (std::chrono::steady_clock::now() < end) {
    v1::BrickInfo info;
    EXPECT_TRUE(Load("hot", path_a, &info).ok());
    std::this_thread::sleep_for(50ms);
    EXPECT_TRUE(Load("hot", path_b, &info).ok());  // an update over a loaded version
    std::this_thread::sleep_for(50ms);
    EXPECT_TRUE(Unload("hot").ok());
    std::this_thread::sleep_for(20ms);
    ++cycles;
  }
  stop.store(true);
  for (auto& t : streams) t.join();
  for (const auto& f : failures) ADD_FAILURE() << f;
  EXPECT_GT(completed.load(), kStreams);
  for (const auto& [v, n] : per_version) EXPECT_GT(n.load(), 0) << "no stream ran on version " << v;
  std::cout << "hot-plug: " << cycles << " load/update/unload cycles, " << completed.load() << " streams completed ("
            << per_version.begin()->second.load() << " / " << per_version.rbegin()->second.load()
            << " per version), " << not_found.load() << " refused while unloaded\n";
  // Every old version is freed once its last stream ended: only the start-up brick is resident.
  v1::ListBricksResponse list;
  ASSERT_TRUE(bricks_->ListBricks(Admin().get(), {}, &list).ok());
  ASSERT_EQ(list.bricks_size(), 1);
  EXPECT_EQ(list.resident_bytes(), list.bricks(0).size_bytes());
}

// The core-region guard through the server: on a model with a planted massive dimension (the
// core_guard fixture) the server computes and caches the core map at start-up, then LoadBrick
// refuses an adapter that zeroes the dimension's writer and accepts a trained one.
TEST(BricksCoreGuardE2E, LoadBrickRefusesAnAdapterThatBreaksTheCoreRegion) {
  const std::string data = std::string(BRICKSERVE_TEST_DATA_DIR) + "/core_guard";
  if (!std::filesystem::exists(data + "/base_massive/config.json")) {
    GTEST_SKIP() << "no core-guard data in " << data << ": run tests/reference/make_core_guard_fixture.py "
                 << "(the ctest fixture core_guard_setup does)";
  }
  const std::string map = ::testing::TempDir() + "/core_map_e2e_" + std::to_string(getpid()) + ".json";
  std::filesystem::remove(map);
  const std::string config = ::testing::TempDir() + "/core_guard_e2e_" + std::to_string(getpid()) + ".textproto";
  std::ofstream(config) << "core_map: \"" << map << "\"\n";
  auto server = ServerProcess::Start(ServerBinary(),
                                     {"--config", config, "--model", data + "/base_massive", "--listen", "127.0.0.1:0"},
                                120s);
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_TRUE(std::filesystem::exists(map)) << "the computed core map is cached at " << map;
  auto bricks = v1::Bricks::NewStub(grpc::CreateChannel((*server)->address(), grpc::InsecureChannelCredentials()));
  v1::LoadBrickRequest r;
  r.set_name("broken");
  r.set_path(data + "/adapters/broken_down_zero");
  v1::BrickInfo info;
  grpc::Status s = bricks->LoadBrick(Context().get(), r, &info);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("core dimension 7 "));
  EXPECT_THAT(s.error_message(), HasSubstr("layers.1.mlp.down_proj"));
  r.set_name("trained");
  r.set_path(data + "/adapters/trained_r8_qvd");
  s = bricks->LoadBrick(Context().get(), r, &info);
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ((*server)->Stop(60s), 0);
  std::filesystem::remove(map);
}

}  // namespace
}  // namespace brickserve::testing
