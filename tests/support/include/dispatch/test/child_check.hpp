#pragma once

// The end-of-life check of a test's child process, as pure functions (no process, no gtest), so
// that the rules are tested on their own. ChildProcess applies them when a child is stopped or
// destroyed and fails the running test with what they return.
//
// A child passes when its stderr log holds no sanitizer report and it ended in one of these ways:
//   - exited 0 (on its own, or after the SIGTERM of a clean stop);
//   - exited with another code that the test read itself (wait_for_exit returned it);
//   - was killed with SIGKILL by the test on purpose (send_signal(SIGKILL): kill -9 tests).
// Everything else is a problem: a crash (any other signal), a non-zero exit nobody looked at, a
// non-zero exit after SIGTERM, dying of the SIGTERM itself (no handler: no clean stop), or not
// exiting at all within the grace periods (then killed).

#include <sys/types.h>

#include <istream>
#include <optional>
#include <string>
#include <vector>

namespace dispatch::test {

// How a child ended, decoded from waitpid's status.
struct ExitStatus {
  bool exited = false;    // exited normally; `code` is its exit code
  int code = -1;          // exit code when exited
  bool signaled = false;  // killed by a signal; `signal` is it
  int signal = 0;
  bool success() const { return exited && code == 0; }
};

// What the test and the support library did to the child, next to how it ended.
struct ExitFacts {
  ExitStatus status;
  bool term_sent = false;          // it was sent SIGTERM (a clean stop was asked for)
  bool killed_on_purpose = false;  // the test sent SIGKILL itself
  bool force_killed = false;       // stop() gave up waiting and sent SIGKILL
  bool code_observed = false;      // wait_for_exit returned the status to the test
  long grace_ms = 0;               // how long stop() waited before it forced the kill
};

// Problems with how the child ended; empty when it ended cleanly under the rules above.
std::vector<std::string> judge_exit(const ExitFacts& facts);

// The first sanitizer report in a log (AddressSanitizer, LeakSanitizer, UBSan's "runtime
// error", ThreadSanitizer, MemorySanitizer): its lines from the first marker on, at most
// `max_lines`. nullopt when the log holds none.
std::optional<std::string> find_sanitizer_report(std::istream& log, std::size_t max_lines = 80);

// The last `max_lines` lines of a log, each clipped for a readable failure message.
std::string log_tail(std::istream& log, std::size_t max_lines);

// "SIGSEGV", "SIGKILL", … or "signal N".
std::string signal_name(int signal);

}  // namespace dispatch::test
