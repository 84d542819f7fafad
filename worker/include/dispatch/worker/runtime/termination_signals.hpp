#pragma once

// SIGTERM and SIGINT as a readable descriptor the event loop watches, so that a signal starts a
// graceful drain on the loop thread instead of interrupting whatever runs.
//
// The usual source is a signalfd, which needs the signals blocked in every thread (main blocks
// them before any thread starts: block_termination_signals()). When the kernel refuses a
// signalfd, the signals must not stay blocked - a blocked SIGTERM is never delivered, and the
// process could then only be killed with SIGKILL - so the fallback installs a plain handler
// that writes to an eventfd (one async-signal-safe write) and unblocks the signals in the
// calling thread, the only one that then receives them.

#include <csignal>
#include <optional>
#include <vector>

#include "dispatch/common/fd.hpp"

namespace dispatch::worker {

class TerminationSignals {
 public:
  enum class Source { signal_fd, handler };

  // `preferred`: Source::handler skips the signalfd (tests use it to take the fallback path).
  explicit TerminationSignals(Source preferred = Source::signal_fd);
  // Restores the previous handlers and signal mask of the fallback.
  ~TerminationSignals();
  TerminationSignals(const TerminationSignals&) = delete;
  TerminationSignals& operator=(const TerminationSignals&) = delete;

  Source source() const { return source_; }
  // Readable when a signal arrived.
  int fd() const;
  // The signals that arrived since the last call, oldest first (the handler records only that
  // some did: it reports SIGTERM for them).
  std::vector<int> take();

 private:
  void install_handler();

  Source source_ = Source::signal_fd;
  UniqueFd signal_fd_;
  std::optional<WakeupFd> wakeup_;
  struct sigaction previous_term_ {};
  struct sigaction previous_int_ {};
  sigset_t previous_mask_{};
};

}  // namespace dispatch::worker
