// The serve configuration: text-format file, flags laid over it, normalisation and limits.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "server/cli/serve_command.h"
#include "server/config.h"

namespace brickserve {
namespace {

bool Contains(const absl::Status& s, const std::string& part) {
  return std::string(s.message()).find(part) != std::string::npos;
}

TEST(ServerConfig, ParsesTextFormat) {
  auto c = ParseServerConfig(R"(
      model: "/models/brick-tiny"
      listen: "0.0.0.0:0"
      threads: 2
      limits { max_new_tokens: 64 max_prompt_tokens: 100 })",
                             "test.textproto");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->model(), "/models/brick-tiny");
  EXPECT_EQ(c->listen(), "0.0.0.0:0");
  EXPECT_EQ(c->threads(), 2);
  EXPECT_EQ(c->limits().max_new_tokens(), 64);
  EXPECT_EQ(c->limits().max_prompt_tokens(), 100);
}

TEST(ServerConfig, ParseErrorNamesFileLineAndField) {
  auto c = ParseServerConfig("model: \"m\"\nthreds: 2\n", "bad.textproto");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(c.status(), "bad.textproto:2:")) << c.status();
  EXPECT_TRUE(Contains(c.status(), "threds")) << c.status();
}

TEST(ServerConfig, MissingFileIsNotFound) {
  auto c = LoadServerConfigFile("/nonexistent/brickserve.textproto");
  EXPECT_EQ(c.status().code(), absl::StatusCode::kNotFound);
}

TEST(ServerConfig, NormaliseFillsDefaultsAndChecksFields) {
  v1::ServerConfig c;
  EXPECT_TRUE(Contains(NormalizeServerConfig(&c), "model is required"));
  c.set_model("/m");
  ASSERT_TRUE(NormalizeServerConfig(&c).ok());
  EXPECT_EQ(c.listen(), kDefaultListenAddress);
  EXPECT_EQ(c.device(), "cpu");

  c.set_listen("localhost");
  EXPECT_TRUE(Contains(NormalizeServerConfig(&c), "must be host:port"));
  c.set_listen("[::1]:0");
  EXPECT_TRUE(NormalizeServerConfig(&c).ok());
  c.set_threads(-1);
  EXPECT_TRUE(Contains(NormalizeServerConfig(&c), "threads = -1"));
  c.set_threads(0);
  c.set_prefill_chunk_tokens(-8);
  EXPECT_TRUE(Contains(NormalizeServerConfig(&c), "prefill_chunk_tokens = -8"));
  c.set_prefill_chunk_tokens(0);
  c.set_max_step_ms(-1);
  EXPECT_TRUE(Contains(NormalizeServerConfig(&c), "max_step_ms = -1"));
  c.set_max_step_ms(0);
  c.set_max_step_ratio(-0.5);
  EXPECT_TRUE(Contains(NormalizeServerConfig(&c), "max_step_ratio = -0.5"));
  c.set_max_step_ratio(std::nan(""));
  EXPECT_TRUE(Contains(NormalizeServerConfig(&c), "max_step_ratio = nan"));
  c.set_max_step_ratio(0);
  EXPECT_TRUE(NormalizeServerConfig(&c).ok());
  c.clear_max_step_ratio();
  c.mutable_limits()->set_max_queued_requests(-3);
  EXPECT_TRUE(Contains(NormalizeServerConfig(&c), "limits.max_queued_requests = -3"));
  c.mutable_limits()->set_max_queued_requests(0);
}

TEST(ServerConfig, BrickFieldsAreChecked) {
  v1::ServerConfig c;
  c.set_model("/m");
  auto* b = c.add_bricks();
  b->set_name("bad name");
  b->set_path("/b");
  EXPECT_TRUE(Contains(NormalizeServerConfig(&c), "bricks[0].name = \"bad name\" must be 1 to 128 characters"));
  b->set_name("sql");
  b->set_path("");
  EXPECT_TRUE(Contains(NormalizeServerConfig(&c), "bricks[0].path is required"));
  b->set_path("/b");
  *c.add_bricks() = *b;
  EXPECT_TRUE(Contains(NormalizeServerConfig(&c), "bricks[1].name = \"sql\" is listed twice"));
  c.mutable_bricks()->RemoveLast();
  c.add_brick_roots("relative/dir");
  EXPECT_TRUE(Contains(NormalizeServerConfig(&c), "brick_roots[0] = \"relative/dir\" must be an absolute path"));
  c.set_brick_roots(0, "/bricks");
  c.set_brick_memory_budget_mb(-1);
  EXPECT_TRUE(Contains(NormalizeServerConfig(&c), "brick_memory_budget_mb = -1 must not be negative"));
  c.set_brick_memory_budget_mb(0);
  c.set_core_guard_max_relative_delta(-0.5);
  EXPECT_TRUE(Contains(NormalizeServerConfig(&c), "core_guard_max_relative_delta must not be negative"));
  c.set_core_guard_max_relative_delta(0.5);
  EXPECT_TRUE(NormalizeServerConfig(&c).ok());
}

TEST(ServerConfig, LimitsDefaultToTheContext) {
  auto l = ResolveLimits(v1::ServerLimits(), 512);
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->max_new_tokens, 512);
  EXPECT_EQ(l->default_max_new_tokens, 128);
  EXPECT_EQ(l->max_prompt_tokens, 511);
  EXPECT_EQ(l->max_stop_strings, 16);
  EXPECT_EQ(l->max_stop_string_bytes, 256);
  EXPECT_EQ(l->max_queued_requests, 64);
  EXPECT_EQ(l->max_top_logprobs, 20);
  // A small cap also lowers the default.
  v1::ServerLimits small;
  small.set_max_new_tokens(32);
  EXPECT_EQ(ResolveLimits(small, 512)->default_max_new_tokens, 32);
}

TEST(ServerConfig, LimitsThatDoNotFitTheContextAreRefused) {
  v1::ServerLimits l;
  l.set_max_new_tokens(600);
  EXPECT_TRUE(Contains(ResolveLimits(l, 512).status(), "limits.max_new_tokens = 600 exceeds the context length 512"));
  l = v1::ServerLimits();
  l.set_max_prompt_tokens(512);
  EXPECT_TRUE(Contains(ResolveLimits(l, 512).status(), "limits.max_prompt_tokens = 512"));
  l = v1::ServerLimits();
  l.set_max_new_tokens(10);
  l.set_default_max_new_tokens(20);
  EXPECT_TRUE(Contains(ResolveLimits(l, 512).status(), "limits.default_max_new_tokens = 20 exceeds"));
}

// Runs ParseServeFlags on a command line given as strings.
absl::Status Parse(std::vector<std::string> args, v1::ServerConfig* c, std::string* usage) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  return ParseServeFlags(static_cast<int>(argv.size()), argv.data(), 0, c, usage);
}

TEST(ServeFlags, FlagsOverrideTheConfigFile) {
  const std::string path = testing::TempDir() + "/serve_flags_test.textproto";
  {
    std::ofstream out(path);
    out << "model: \"/from/file\"\nlisten: \"127.0.0.1:7000\"\nthreads: 3\nlimits { max_new_tokens: 64 }\n";
  }
  v1::ServerConfig c;
  std::string usage;
  ASSERT_TRUE(Parse({"--listen", "127.0.0.1:0", "--config", path, "--max-prompt-tokens=9", "--prefill-chunk-tokens",
                     "24", "--max-step-ms=150"}, &c, &usage).ok());
  EXPECT_TRUE(usage.empty());
  EXPECT_EQ(c.model(), "/from/file");          // file
  EXPECT_EQ(c.listen(), "127.0.0.1:0");        // flag wins, even before --config on the line
  EXPECT_EQ(c.threads(), 3);                   // file
  EXPECT_EQ(c.limits().max_new_tokens(), 64);  // file
  EXPECT_EQ(c.limits().max_prompt_tokens(), 9);  // flag
  EXPECT_EQ(c.prefill_chunk_tokens(), 24);       // flag
  EXPECT_EQ(ToEngineOptions(c).prefill_chunk_tokens, 24);
  EXPECT_EQ(c.max_step_ms(), 150);                // flag
  EXPECT_EQ(ToEngineOptions(c).max_step_ms, 150.0);
  EXPECT_EQ(ToEngineOptions(c).max_step_ratio, 2.5);  // neither: the default
  ASSERT_TRUE(Parse({"--config", path, "--max-step-ratio", "0"}, &c, &usage).ok());
  EXPECT_EQ(ToEngineOptions(c).max_step_ratio, 0.0);  // 0 turns the target off, not "default"
  ASSERT_TRUE(Parse({"--config", path, "--max-step-ratio=1.5"}, &c, &usage).ok());
  EXPECT_EQ(ToEngineOptions(c).max_step_ratio, 1.5);
  v1::ServerConfig unset;
  EXPECT_FALSE(unset.has_max_step_ratio());
  EXPECT_EQ(ToEngineOptions(unset).max_step_ratio, 2.5);
  std::remove(path.c_str());
}

TEST(ServeFlags, HelpListsEveryFlag) {
  v1::ServerConfig c;
  std::string usage;
  ASSERT_TRUE(Parse({"--help"}, &c, &usage).ok());
  for (const char* flag : {"--config", "--model", "--listen", "--device", "--threads", "--max-context",
                           "--max-batch-tokens", "--kv-cache-tokens", "--max-new-tokens", "--default-max-new-tokens",
                           "--max-prompt-tokens", "--max-stop-strings", "--max-stop-string-bytes",
                           "--max-queued-requests", "--max-request-bytes", "--shutdown-grace-s",
                           "--max-queued-tokens", "--max-running-requests", "--prefill-chunk-tokens",
                           "--prefix-cache", "--batch-invariant"}) {
    EXPECT_NE(usage.find(flag), std::string::npos) << flag;
  }
}

TEST(ServeFlags, Errors) {
  v1::ServerConfig c;
  std::string usage;
  EXPECT_TRUE(Contains(Parse({"--model", "/m", "--threads", "two"}, &c, &usage), "--threads"));
  EXPECT_TRUE(Contains(Parse({"--modle", "/m"}, &c, &usage), "unknown flag --modle"));
  EXPECT_TRUE(Contains(Parse({"--listen", "127.0.0.1:0"}, &c, &usage), "model is required"));
  EXPECT_EQ(Parse({"--config", "/nonexistent.textproto"}, &c, &usage).code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace brickserve
