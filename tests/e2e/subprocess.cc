#include "subprocess.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"

extern char** environ;

namespace brickserve::testing {
namespace {

using Clock = std::chrono::steady_clock;

// Spawns `argv` with stdout (and stderr when `err_fd` is given) on pipes.
absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& argv, int* out_fd, int* err_fd) {
  int out[2], err[2] = {-1, -1};
  if (pipe2(out, O_CLOEXEC) != 0) return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  if (err_fd != nullptr && pipe2(err, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  if (err_fd != nullptr) posix_spawn_file_actions_adddup2(&actions, err[1], STDERR_FILENO);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(out[1]);
  if (err_fd != nullptr) close(err[1]);
  if (rc != 0) {
    close(out[0]);
    if (err_fd != nullptr) close(err[0]);
    return absl::InternalError(absl::StrCat("cannot start ", argv[0], ": ", std::strerror(rc)));
  }
  *out_fd = out[0];
  if (err_fd != nullptr) *err_fd = err[0];
  return pid;
}

int ExitCode(int wait_status) {
  if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return -1;
}

// Waits for `pid` until `deadline`; returns its exit code, or nothing on timeout.
std::optional<int> WaitUntil(pid_t pid, Clock::time_point deadline) {
  for (;;) {
    int status = 0;
    const pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return ExitCode(status);
    if (r < 0) return -1;
    if (Clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

int KillAndWait(pid_t pid) {
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  return ExitCode(status);
}

int RemainingMs(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left > 0 ? static_cast<int>(left) : 0;
}

}  // namespace

absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv, std::chrono::seconds timeout) {
  int out_fd = -1, err_fd = -1;
  auto pid = Spawn(argv, &out_fd, &err_fd);
  if (!pid.ok()) return pid.status();
  const auto deadline = Clock::now() + timeout;
  CommandResult result;
  pollfd fds[2] = {{out_fd, POLLIN, 0}, {err_fd, POLLIN, 0}};
  std::string* sinks[2] = {&result.out, &result.err};
  int open_fds = 2;
  while (open_fds > 0 && RemainingMs(deadline) > 0) {
    if (poll(fds, 2, RemainingMs(deadline)) <= 0) continue;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char buf[4096];
      const ssize_t n = read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        sinks[i]->append(buf, static_cast<size_t>(n));
      } else {
        close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  for (auto& f : fds) {
    if (f.fd >= 0) close(f.fd);
  }
  if (auto code = WaitUntil(*pid, deadline)) {
    result.exit_code = *code;
    return result;
  }
  KillAndWait(*pid);
  return absl::DeadlineExceededError(absl::StrCat(argv[0], " did not finish within ", timeout.count(),
                                                  " s; stdout so far: ", result.out, "; stderr: ", result.err));
}

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Start(const std::string& binary,
                                                                    const std::vector<std::string>& args,
                                                                    std::chrono::seconds timeout) {
  std::vector<std::string> argv = {binary, "serve"};
  argv.insert(argv.end(), args.begin(), args.end());
  int out_fd = -1;
  auto pid = Spawn(argv, &out_fd, nullptr);
  if (!pid.ok()) return pid.status();
  auto server = std::unique_ptr<ServerProcess>(new ServerProcess(*pid, out_fd));
  const auto deadline = Clock::now() + timeout;
  const std::string marker = "brickserve: listening on ";
  std::string out;
  while (RemainingMs(deadline) > 0) {
    pollfd p{out_fd, POLLIN, 0};
    if (poll(&p, 1, RemainingMs(deadline)) <= 0) continue;
    char buf[1024];
    const ssize_t n = read(out_fd, buf, sizeof buf);
    if (n <= 0) {  // stdout closed: the server exited before listening
      const int code = server->Stop(std::chrono::seconds(5));
      return absl::UnavailableError(absl::StrCat("brickserve serve exited with code ", code,
                                                 " before listening; stdout: ", out));
    }
    out.append(buf, static_cast<size_t>(n));
    const size_t at = out.find(marker);
    const size_t eol = at == std::string::npos ? std::string::npos : out.find('\n', at);
    if (eol != std::string::npos) {
      server->address_ = out.substr(at + marker.size(), eol - at - marker.size());
      const std::string metrics_marker = "brickserve: metrics on ";
      if (const size_t m = out.find(metrics_marker); m != std::string::npos && m < at) {
        const size_t m_eol = out.find('\n', m);
        server->metrics_address_ = out.substr(m + metrics_marker.size(), m_eol - m - metrics_marker.size());
      }
      return server;
    }
  }
  server->Stop(std::chrono::seconds(5));
  return absl::DeadlineExceededError(absl::StrCat("brickserve serve did not print \"", marker, "\" within ",
                                                  timeout.count(), " s; stdout: ", out));
}

ServerProcess::~ServerProcess() { Stop(std::chrono::seconds(10)); }

int ServerProcess::Stop(std::chrono::seconds timeout) {
  if (exit_code_ != -1) return exit_code_;
  kill(pid_, SIGTERM);
  if (auto code = WaitUntil(pid_, Clock::now() + timeout)) {
    exit_code_ = *code;
  } else {
    exit_code_ = KillAndWait(pid_);
  }
  close(out_fd_);
  return exit_code_;
}

}  // namespace brickserve::testing
