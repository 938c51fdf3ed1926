// Child processes for the end-to-end tests: the real `brickserve serve` (started on port 0, its
// chosen address read from stdout) and client subcommands run to completion. Every wait is bounded
// and a server still running at destruction is killed, so a broken server cannot hang the suite.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace brickserve::testing {

struct CommandResult {
  int exit_code = -1;  // 128 + signal when killed by a signal
  std::string out, err;
};

// Runs `argv` to completion (killed after `timeout`), capturing stdout and stderr.
absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv, std::chrono::seconds timeout);

class ServerProcess {
 public:
  // Starts `binary serve <args>` and waits up to `timeout` for "brickserve: listening on ADDRESS".
  // The server's stderr goes to the test's stderr (its log is then part of a failure's output).
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start(const std::string& binary,
                                                              const std::vector<std::string>& args,
                                                              std::chrono::seconds timeout);
  ~ServerProcess();

  const std::string& address() const { return address_; }
  // The /metrics HTTP address, when the server was started with --metrics-listen.
  const std::string& metrics_address() const { return metrics_address_; }
  pid_t pid() const { return pid_; }

  // SIGTERM, then SIGKILL if it has not exited within `timeout`. Returns the exit code (128 +
  // signal when killed). Idempotent.
  int Stop(std::chrono::seconds timeout);

 private:
  ServerProcess(pid_t pid, int out_fd) : pid_(pid), out_fd_(out_fd) {}

  pid_t pid_;
  int out_fd_;
  int exit_code_ = -1;
  std::string address_;
  std::string metrics_address_;
};

}  // namespace brickserve::testing
