#pragma once

// A child process owned by a test: spawned with arguments and extra environment, its stdout
// readable line by line with a deadline, its stderr captured to a log file, and always stopped
// (SIGTERM; a second SIGTERM; SIGKILL after a bound) and reaped when the object goes away — so a
// failing test never leaks a process.
//
//   auto child = dispatch::test::ChildProcess::spawn({"/path/to/fake-provider", "--quiet"});
//   std::optional<std::string> port = child.read_line(std::chrono::seconds(5));
//   ...
//   child.stop();  // optional: the destructor does the same
//
// Checked at the end of its life (the first stop(), or the destructor): the running test fails,
// with the relevant lines of the child's log, when the child wrote a sanitizer report (ASan,
// LSan, UBSan, …), crashed, did not exit 0 after SIGTERM, exited non-zero on its own without the
// test reading the code (wait_for_exit), or had to be killed. A child the test kills on purpose
// with send_signal(SIGKILL) is exempt from the exit check (not from the sanitizer check). The
// rules are in child_check.hpp. Every test binary therefore checks the real processes it runs,
// which is what makes the sanitizer pass of scripts/test cover the broker, the workers and the
// fake provider, not only the test's own process.

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "dispatch/test/child_check.hpp"

namespace dispatch::test {

struct ChildOptions {
  // KEY=VALUE entries added to (or replacing in) the parent's environment.
  std::vector<std::string> extra_env;
  // Names removed from the inherited environment (e.g. OPENAI_API_KEY).
  std::vector<std::string> unset_env;
  // The child's stderr is appended to this file (the test may read it). When unset it goes to a
  // fresh file in the temp directory, removed when the child passed its check and kept (its path
  // is in the failure) when not. Either way the check reads only what this child appended.
  std::optional<std::string> stderr_path;
  // When false the child's stdout is inherited and read_line() always returns nullopt.
  bool capture_stdout = true;
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
  // Calls stop() with the default grace period (and so runs the end-of-life check).
  ~ChildProcess();

  pid_t pid() const { return pid_; }

  // One line of the child's stdout without the trailing newline, waiting at most `timeout`.
  // nullopt on timeout, on EOF (the child closed stdout or exited) or when stdout is not captured.
  std::optional<std::string> read_line(std::chrono::milliseconds timeout);

  // True while the child has not exited (reaps it if it has).
  bool running();

  // Waits at most `timeout` for the child to exit on its own. A status returned here is the
  // test's to judge: a non-zero exit code no longer fails the end-of-life check (a crash or a
  // sanitizer report still does).
  std::optional<ExitStatus> wait_for_exit(std::chrono::milliseconds timeout);

  // Sends `signal` to the child (no-op once it has been reaped). SIGKILL marks the child as
  // killed on purpose (exempt from the exit check); SIGTERM asks for a clean stop (exit 0).
  void send_signal(int signal);

  // kill -9 on purpose (a test of crash recovery, a hung script): SIGKILL, wait, then the
  // end-of-life check, which exempts how it ended but still reads the log for sanitizer reports.
  ExitStatus kill();

  // Sends SIGTERM without waiting: lets a test stop several children at once, then stop() each.
  void request_stop();

  // Clean stop: SIGTERM, wait up to `grace`; then a second SIGTERM (our programs end their drain
  // at once on it), wait up to `grace` again; then SIGKILL, which fails the check. Then runs the
  // end-of-life check. Idempotent: later calls return the status collected by the first.
  ExitStatus stop(std::chrono::milliseconds grace = std::chrono::milliseconds(5000));

  // Where the child's stderr goes.
  const std::string& log_path() const { return log_path_; }

 private:
  ChildProcess() = default;
  void close_stdout();
  bool reap(bool block);
  bool wait_until_reaped(std::chrono::milliseconds timeout);
  // The end-of-life check, once: ADD_FAILURE to the running test when it finds a problem.
  void check_once();

  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  std::string pending_;  // bytes read from stdout after the last returned line
  std::optional<ExitStatus> status_;
  std::string command_;            // for messages: the command line, clipped
  std::string log_path_;           // the child's stderr
  std::uintmax_t log_offset_ = 0;  // what the file held before this child wrote to it
  bool owns_log_ = false;          // a file made for this child (removed when it passed)
  ExitFacts facts_;                // filled as the test and stop() act on the child
  bool checked_ = false;
};

}  // namespace dispatch::test
