// The rest of the API through the real server: validation errors with their codes, tokenizer calls,
// model info, the standard health service, reflection, the config file, and the CLI client.
#include <signal.h>

#include <cstdio>
#include <optional>
#include <fstream>
#include <set>

#include "gmock/gmock.h"
#include "google/protobuf/descriptor.pb.h"
#include "grpc_clients/health_v1.grpc.pb.h"
#include "grpc_clients/reflection_v1alpha.grpc.pb.h"
#include "server_fixture.h"

namespace brickserve::testing {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

using ApiE2E = ServerTest;

grpc::Status Generate(v1::InferenceService::Stub* stub, const v1::GenerateRequest& r) {
  v1::GenerateResponse resp;
  auto context = Context();
  return stub->Generate(context.get(), r, &resp);
}

grpc::Status GenerateStream(v1::InferenceService::Stub* stub, const v1::GenerateRequest& r) {
  auto context = Context();
  auto reader = stub->GenerateStream(context.get(), r);
  v1::GenerateStreamResponse m;
  int messages = 0;
  while (reader->Read(&m)) ++messages;
  EXPECT_EQ(messages, 0);  // refused before anything is generated
  return reader->Finish();
}

v1::GenerateRequest Text(const std::string& text) {
  v1::GenerateRequest r;
  r.set_text(text);
  r.set_max_new_tokens(4);
  return r;
}

TEST_F(ApiE2E, InvalidRequestsAreRefusedWithTheFieldAndTheLimit) {
  struct Case {
    std::string name;
    v1::GenerateRequest request;
    grpc::StatusCode code;
    std::string message;
  };
  std::vector<Case> cases;
  cases.push_back({"empty prompt", Text(""), grpc::StatusCode::INVALID_ARGUMENT, "text: the prompt is empty"});
  cases.push_back({"no prompt", v1::GenerateRequest(), grpc::StatusCode::INVALID_ARGUMENT, "set either text or token_ids"});
  {
    v1::GenerateRequest r;
    for (int i = 0; i < 600; ++i) r.mutable_token_ids()->add_ids(259);
    cases.push_back({"prompt too long", r, grpc::StatusCode::INVALID_ARGUMENT,
                     "prompt has 600 tokens; at most 511 are allowed"});
  }
  {
    v1::GenerateRequest r = Text("hi");
    r.set_max_new_tokens(0);
    cases.push_back({"max_new_tokens 0", r, grpc::StatusCode::INVALID_ARGUMENT,
                     "max_new_tokens = 0 is out of range: must be in [1, 512]"});
    r.set_max_new_tokens(100000);
    cases.push_back({"max_new_tokens huge", r, grpc::StatusCode::INVALID_ARGUMENT, "max_new_tokens = 100000"});
  }
  {
    v1::GenerateRequest r = Text("hi");
    r.mutable_sampling()->set_temperature(-0.5f);
    cases.push_back({"temperature", r, grpc::StatusCode::INVALID_ARGUMENT, "temperature = -0.5 is out of range"});
    r = Text("hi");
    r.mutable_sampling()->set_top_p(1.5f);
    cases.push_back({"top_p", r, grpc::StatusCode::INVALID_ARGUMENT, "top_p = 1.5 is out of range: must be in (0, 1]"});
    r = Text("hi");
    r.set_top_logprobs(50);
    cases.push_back({"top_logprobs", r, grpc::StatusCode::INVALID_ARGUMENT, "top_logprobs = 50 is out of range"});
  }
  {
    v1::GenerateRequest r = Text("hi");
    r.add_stop_token_ids(8192);
    cases.push_back({"stop token", r, grpc::StatusCode::INVALID_ARGUMENT,
                     "stop_token_ids[0] = 8192 is outside the vocabulary [0, 8192)"});
    r = Text("hi");
    r.add_stop("");
    cases.push_back({"empty stop", r, grpc::StatusCode::INVALID_ARGUMENT, "stop[0] is empty"});
    r = Text("hi");
    r.mutable_token_ids()->add_ids(-3);
    cases.push_back({"prompt id", r, grpc::StatusCode::INVALID_ARGUMENT, "token_ids.ids[0] = -3 is outside"});
  }
  {
    v1::GenerateRequest r = Text("hi");
    r.add_bricks("x");
    cases.push_back({"brick", r, grpc::StatusCode::NOT_FOUND, "brick \"x\" is not loaded"});
    r = Text("hi");
    r.mutable_router()->set_policy(v1::RouterPolicy::POLICY_TOP_K);
    cases.push_back({"router", r, grpc::StatusCode::FAILED_PRECONDITION, "needs a module set"});
  }
  const auto before = Stats();
  for (const auto& c : cases) {
    for (bool stream : {false, true}) {
      const grpc::Status s = stream ? GenerateStream(stub_, c.request) : Generate(stub_, c.request);
      EXPECT_EQ(s.error_code(), c.code) << c.name << (stream ? " (stream)" : " (unary)") << ": " << s.error_message();
      EXPECT_THAT(s.error_message(), HasSubstr(c.message)) << c.name;
    }
  }
  const auto after = Stats();
  EXPECT_EQ(after.rejected_requests() - before.rejected_requests(), 2 * static_cast<int64_t>(cases.size()));
  EXPECT_EQ(after.total_requests(), before.total_requests());
  EXPECT_EQ(after.active_requests(), 0);
}

// Protobuf refuses a whole message whose `string` field is not UTF-8; the server parses the bytes
// itself so that the client learns which field (see server/wire.h), and keeps serving.
TEST_F(ApiE2E, NonUtf8TextIsInvalidArgumentNamingTheField) {
  v1::GenerateRequest r = Text("hi");
  r.add_stop("ok");
  r.add_stop("\xC3\x28");
  for (bool stream : {false, true}) {
    const grpc::Status s = stream ? GenerateStream(stub_, r) : Generate(stub_, r);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
    EXPECT_EQ(s.error_message(), "stop[1] is not valid UTF-8");
  }
  const grpc::Status text = Generate(stub_, Text("caf\xE9"));
  EXPECT_EQ(text.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(text.error_message(), "text is not valid UTF-8");

  v1::TokenizeRequest tokenize;
  tokenize.set_text("\xFF");
  v1::TokenizeResponse resp;
  auto context = Context();
  const grpc::Status tok = stub_->Tokenize(context.get(), tokenize, &resp);
  EXPECT_EQ(tok.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(tok.error_message(), "text is not valid UTF-8");
  EXPECT_TRUE(Generate(stub_, Text("hi")).ok());
}

TEST_F(ApiE2E, TokenizeAndDetokenize) {
  v1::TokenizeRequest req;
  req.set_text("The kernel uses a");
  v1::TokenizeResponse resp;
  auto context = Context();
  ASSERT_TRUE(stub_->Tokenize(context.get(), req, &resp).ok());
  EXPECT_EQ(std::vector<int32_t>(resp.ids().begin(), resp.ids().end()), (std::vector<int32_t>{1, 421, 603, 2152, 264}));
  ASSERT_EQ(resp.tokens_size(), 5);
  EXPECT_EQ(resp.tokens(0), "<s>");
  EXPECT_EQ(resp.tokens(1), "▁The");

  req.set_add_special_tokens(false);
  context = Context();
  ASSERT_TRUE(stub_->Tokenize(context.get(), req, &resp).ok());
  EXPECT_EQ(resp.ids(0), 421);

  v1::DetokenizeRequest dreq;
  for (int id : {1, 421, 603, 2152, 264}) dreq.add_ids(id);
  dreq.set_skip_special_tokens(true);
  v1::DetokenizeResponse dresp;
  context = Context();
  ASSERT_TRUE(stub_->Detokenize(context.get(), dreq, &dresp).ok());
  EXPECT_EQ(dresp.text(), "The kernel uses a");

  dreq.add_ids(9000);
  context = Context();
  const grpc::Status bad = stub_->Detokenize(context.get(), dreq, &dresp);
  EXPECT_EQ(bad.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(bad.error_message(), HasSubstr("ids[5] = 9000 is outside the vocabulary [0, 8192)"));
}

TEST_F(ApiE2E, ModelInfo) {
  v1::GetModelInfoResponse info;
  auto context = Context();
  ASSERT_TRUE(stub_->GetModelInfo(context.get(), v1::GetModelInfoRequest(), &info).ok());
  EXPECT_EQ(info.model(), "brick-tiny");
  EXPECT_EQ(info.architecture(), "LlamaForCausalLM");
  EXPECT_EQ(info.vocab_size(), 8192);
  EXPECT_EQ(info.max_context(), 512);
  EXPECT_EQ(info.num_layers(), 6);
  EXPECT_EQ(info.hidden_size(), 256);
  EXPECT_EQ(info.bos_token_id(), 1);
  ASSERT_EQ(info.eos_token_ids_size(), 1);
  EXPECT_EQ(info.eos_token_ids(0), 2);
  EXPECT_GT(info.weight_bytes(), 0u);
  EXPECT_EQ(info.limits().max_new_tokens(), 512);
  EXPECT_EQ(info.limits().default_max_new_tokens(), 128);
  EXPECT_EQ(info.limits().max_prompt_tokens(), 511);
  EXPECT_EQ(info.limits().max_top_logprobs(), 20);
  EXPECT_EQ(info.bricks_size(), 0);
  ASSERT_EQ(info.router_policies_size(), 1);
  EXPECT_EQ(info.router_policies(0), v1::RouterPolicy::POLICY_DENSE);
  EXPECT_FALSE(info.server_version().empty());
}

TEST_F(ApiE2E, HealthCheckIsServing) {
  auto health = grpc::health::v1::Health::NewStub(*channel_);
  for (const std::string service : {"", "brickserve.v1.InferenceService"}) {
    grpc::health::v1::HealthCheckRequest req;
    req.set_service(service);
    grpc::health::v1::HealthCheckResponse resp;
    auto context = Context();
    const grpc::Status s = health->Check(context.get(), req, &resp);
    ASSERT_TRUE(s.ok()) << "\"" << service << "\": " << s.error_message();
    EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING) << "\"" << service << "\"";
  }
  grpc::health::v1::HealthCheckRequest req;
  req.set_service("no.such.Service");
  grpc::health::v1::HealthCheckResponse resp;
  auto context = Context();
  EXPECT_EQ(health->Check(context.get(), req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(ApiE2E, ReflectionListsTheServicesAndDescribesTheApi) {
  namespace refl = grpc::reflection::v1alpha;
  auto stub = refl::ServerReflection::NewStub(*channel_);
  auto context = Context();
  auto stream = stub->ServerReflectionInfo(context.get());
  refl::ServerReflectionRequest req;
  req.set_list_services("");
  ASSERT_TRUE(stream->Write(req));
  refl::ServerReflectionResponse resp;
  ASSERT_TRUE(stream->Read(&resp));
  std::set<std::string> services;
  for (const auto& s : resp.list_services_response().service()) services.insert(s.name());
  EXPECT_TRUE(services.count("brickserve.v1.InferenceService"));
  EXPECT_TRUE(services.count("grpc.health.v1.Health"));
  EXPECT_TRUE(services.count("grpc.reflection.v1alpha.ServerReflection"));

  // The descriptor a tool like grpcurl would use: every RPC of the service is described.
  req.set_file_containing_symbol("brickserve.v1.InferenceService");
  ASSERT_TRUE(stream->Write(req));
  ASSERT_TRUE(stream->Read(&resp));
  ASSERT_TRUE(resp.has_file_descriptor_response()) << resp.ShortDebugString();
  std::set<std::string> methods;
  for (const auto& bytes : resp.file_descriptor_response().file_descriptor_proto()) {
    google::protobuf::FileDescriptorProto file;
    ASSERT_TRUE(file.ParseFromString(bytes));
    for (const auto& service : file.service()) {
      for (const auto& m : service.method()) methods.insert(service.name() + "." + m.name());
    }
  }
  for (const char* m : {"Generate", "GenerateStream", "Tokenize", "Detokenize", "GetModelInfo", "GetServerStats"}) {
    EXPECT_TRUE(methods.count(std::string("InferenceService.") + m)) << m;
  }
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
}

// The CLI client subcommands against the running server.
TEST_F(ApiE2E, GenerateAndTokenizeSubcommands) {
  auto gen = RunCommand({BRICKSERVE_BINARY, "generate", "--server", server_->address(), "--prompt-ids",
                         "1,421,603,2152,264", "--max-new-tokens", "8", "--ignore-eos", "--show-ids"},
                        60s);
  ASSERT_TRUE(gen.ok()) << gen.status();
  EXPECT_EQ(gen->exit_code, 0) << gen->err;
  EXPECT_THAT(gen->out, HasSubstr("ids: 13,259,279,259,4642,259,4642,259\n"));

  auto unary = RunCommand({BRICKSERVE_BINARY, "generate", "--server", server_->address(), "--prompt",
                           "The kernel uses a", "--max-new-tokens", "8", "--ignore-eos", "--show-ids", "--unary"},
                          60s);
  ASSERT_TRUE(unary.ok()) << unary.status();
  EXPECT_EQ(unary->exit_code, 0) << unary->err;
  EXPECT_EQ(unary->out, gen->out);

  auto tok = RunCommand({BRICKSERVE_BINARY, "tokenize", "--server", server_->address(), "--text", "The kernel uses a"},
                        60s);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ(tok->exit_code, 0) << tok->err;
  EXPECT_THAT(tok->out, HasSubstr("ids: 1,421,603,2152,264\n"));

  auto bad = RunCommand({BRICKSERVE_BINARY, "generate", "--server", server_->address(), "--prompt", "x", "--brick",
                         "x"},
                        60s);
  ASSERT_TRUE(bad.ok()) << bad.status();
  EXPECT_EQ(bad->exit_code, 1);
  EXPECT_THAT(bad->err, HasSubstr("NOT_FOUND: brick \"x\" is not loaded"));
}

TEST_F(ApiE2E, HelpListsEveryFlag) {
  for (const char* command : {"serve", "generate", "tokenize", "run"}) {
    auto help = RunCommand({BRICKSERVE_BINARY, command, "--help"}, 30s);
    ASSERT_TRUE(help.ok()) << help.status();
    EXPECT_EQ(help->exit_code, 0) << command;
    EXPECT_THAT(help->out, HasSubstr("--help")) << command;
  }
  auto serve = RunCommand({BRICKSERVE_BINARY, "serve", "--help"}, 30s);
  for (const char* flag : {"--config", "--model", "--listen", "--threads", "--max-context", "--max-new-tokens",
                           "--max-prompt-tokens", "--max-queued-requests"}) {
    EXPECT_THAT(serve->out, HasSubstr(flag));
  }
  auto top = RunCommand({BRICKSERVE_BINARY, "--help"}, 30s);
  for (const char* command : {"serve", "generate", "tokenize", "run"}) EXPECT_THAT(top->out, HasSubstr(command));
}

// A second server from a config file, with a flag overriding it; and a busy port is an error.
TEST_F(ApiE2E, ConfigFileWithFlagOverrides) {
  const std::string path = ::testing::TempDir() + "/brickserve_e2e.textproto";
  {
    std::ofstream out(path);
    out << "model: \"" << kModelDir << "\"\nlisten: \"127.0.0.1:0\"\nthreads: 1\n"
        << "limits { max_new_tokens: 64 default_max_new_tokens: 16 max_prompt_tokens: 100 }\n";
  }
  auto server = ServerProcess::Start(BRICKSERVE_BINARY, {"--config", path, "--max-prompt-tokens", "4"}, 120s);
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = v1::InferenceService::NewStub(
      grpc::CreateChannel((*server)->address(), grpc::InsecureChannelCredentials()));
  v1::GetModelInfoResponse info;
  auto context = Context();
  ASSERT_TRUE(stub->GetModelInfo(context.get(), v1::GetModelInfoRequest(), &info).ok());
  EXPECT_EQ(info.limits().max_new_tokens(), 64);          // from the file
  EXPECT_EQ(info.limits().default_max_new_tokens(), 16);  // from the file
  EXPECT_EQ(info.limits().max_prompt_tokens(), 4);        // the flag wins
  v1::GenerateRequest r = Text("The kernel uses a");      // 5 tokens with BOS
  const grpc::Status s = Generate(stub.get(), r);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("limits.max_prompt_tokens"));
  r.set_max_new_tokens(65);
  r.set_text("The");
  EXPECT_THAT(Generate(stub.get(), r).error_message(), HasSubstr("must be in [1, 64]"));
  // Close the connection first: gRPC's shutdown waits (up to the grace period) for clients to
  // acknowledge the GOAWAY, and an idle synchronous client only polls every few seconds.
  stub.reset();
  EXPECT_EQ((*server)->Stop(20s), 0);
  std::remove(path.c_str());
}

// SIGTERM drains: health turns NOT_SERVING, new generations are UNAVAILABLE, the one in flight
// finishes normally, and the process exits 0.
TEST_F(ApiE2E, SigtermLetsTheGenerationInFlightFinish) {
  // A grace period long enough for the 300 tokens even on a loaded CI machine (the default 5 s is not).
  auto server = ServerProcess::Start(
      BRICKSERVE_BINARY, {"--model", kModelDir, "--listen", "127.0.0.1:0", "--shutdown-grace-s", "60"}, 120s);
  ASSERT_TRUE(server.ok()) << server.status();
  auto channel = grpc::CreateChannel((*server)->address(), grpc::InsecureChannelCredentials());
  auto stub = v1::InferenceService::NewStub(channel);
  auto health = grpc::health::v1::Health::NewStub(channel);

  v1::GenerateRequest long_request = Text("The kernel uses a");
  long_request.set_max_new_tokens(300);
  long_request.set_ignore_eos(true);
  auto context = Context();
  auto reader = stub->GenerateStream(context.get(), long_request);
  v1::GenerateStreamResponse m;
  ASSERT_TRUE(reader->Read(&m));
  ASSERT_EQ(kill((*server)->pid(), SIGTERM), 0);

  ASSERT_TRUE(Eventually([&] {
    grpc::health::v1::HealthCheckResponse resp;
    auto c = Context();
    health->Check(c.get(), grpc::health::v1::HealthCheckRequest(), &resp);
    return resp.status() == grpc::health::v1::HealthCheckResponse::NOT_SERVING;
  }));
  const grpc::Status refused = Generate(stub.get(), Text("hi"));
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAVAILABLE) << refused.error_message();
  EXPECT_THAT(refused.error_message(), HasSubstr("shutting down"));

  int tokens = m.piece().tokens_size();
  std::optional<v1::GenerateFinal> final;
  while (reader->Read(&m)) {
    if (m.has_piece()) tokens += m.piece().tokens_size();
    if (m.has_final()) final = m.final();
  }
  EXPECT_TRUE(reader->Finish().ok());
  ASSERT_TRUE(final.has_value());
  EXPECT_EQ(final->finish_reason(), v1::FINISH_REASON_LENGTH);
  EXPECT_EQ(tokens, 300);
  EXPECT_EQ((*server)->Stop(20s), 0);
}

TEST_F(ApiE2E, BusyPortIsAStartupError) {
  auto second = ServerProcess::Start(BRICKSERVE_BINARY, {"--model", kModelDir, "--listen", server_->address()}, 120s);
  ASSERT_FALSE(second.ok());
  EXPECT_THAT(std::string(second.status().message()), HasSubstr("exited with code 1"));
}

}  // namespace
}  // namespace brickserve::testing
