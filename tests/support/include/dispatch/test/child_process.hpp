#pragma once

// A child process owned by a test: spawned with arguments and extra environment, its stdout
// readable line by line with a deadline, and always stopped (SIGTERM, then SIGKILL after a
// bound) and reaped when the object goes away — so a failing test never leaks a process.
//
//   auto child = dispatch::test::ChildProcess::spawn({"/path/to/fake-provider", "--quiet"});
//   std::optional<std::string> port = child.read_line(std::chrono::seconds(5));
//   ...
//   int status = child.stop();  // optional: the destructor does the same
//
// stderr is inherited (test logs show it) unless ChildOptions::stderr_path is set.

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace dispatch::test {

struct ChildOptions {
  // KEY=VALUE entries added to (or replacing in) the parent's environment.
  std::vector<std::string> extra_env;
  // Names removed from the inherited environment (e.g. OPENAI_API_KEY).
  std::vector<std::string> unset_env;
  // When set, the child's stderr is appended to this file instead of inherited.
  std::optional<std::string> stderr_path;
  // When false the child's stdout is inherited and read_line() always returns nullopt.
  bool capture_stdout = true;
};

// How a child ended, decoded from waitpid's status.
struct ExitStatus {
  bool exited = false;    // exited normally; `code` is its exit code
  int code = -1;          // exit code when exited
  bool signaled = false;  // killed by a signal; `signal` is it
  int signal = 0;
  bool success() const { return exited && code == 0; }
};

class ChildProcess {
 public:
  // argv[0] is the executable path (no PATH lookup). Throws std::runtime_error when the process
  // cannot be started (missing file, no permission).
  static ChildProcess spawn(const std::vector<std::string>& argv, const ChildOptions& options = {});

  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&& other) noexcept;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  // Calls stop() with the default grace period.
  ~ChildProcess();

  pid_t pid() const { return pid_; }

  // One line of the child's stdout without the trailing newline, waiting at most `timeout`.
  // nullopt on timeout, on EOF (the child closed stdout or exited) or when stdout is not captured.
  std::optional<std::string> read_line(std::chrono::milliseconds timeout);

  // True while the child has not exited (reaps it if it has).
  bool running();

  // Waits at most `timeout` for the child to exit on its own.
  std::optional<ExitStatus> wait_for_exit(std::chrono::milliseconds timeout);

  // Sends `signal` to the child (no-op once it has been reaped).
  void send_signal(int signal);

  // SIGTERM, wait up to `grace`, then SIGKILL and wait. Idempotent: later calls return the
  // status collected by the first.
  ExitStatus stop(std::chrono::milliseconds grace = std::chrono::milliseconds(3000));

 private:
  ChildProcess(pid_t pid, int stdout_fd) : pid_(pid), stdout_fd_(stdout_fd) {}
  void close_stdout();
  bool reap(bool block);

  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  std::string pending_;  // bytes read from stdout after the last returned line
  std::optional<ExitStatus> status_;
};

}  // namespace dispatch::test
