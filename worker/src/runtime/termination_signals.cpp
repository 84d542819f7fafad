#include "dispatch/worker/runtime/termination_signals.hpp"

#include <pthread.h>
#include <spdlog/spdlog.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace dispatch::worker {
namespace {

// The fallback handler's target. A signal handler can reach only globals; one instance at a
// time is supported (signal dispositions are per process anyway).
std::atomic<const WakeupFd*> g_wakeup{nullptr};

extern "C" void on_termination_signal(int /*signo*/) {
  const int saved_errno = errno;
  if (const WakeupFd* wakeup = g_wakeup.load()) wakeup->signal();
  errno = saved_errno;
}

sigset_t termination_set() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  return set;
}

}  // namespace

TerminationSignals::TerminationSignals(Source preferred) {
  if (preferred == Source::signal_fd) {
    signal_fd_ = open_signal_fd({SIGTERM, SIGINT});
    if (signal_fd_) return;
    spdlog::warn("signalfd failed ({}); handling SIGTERM and SIGINT with a signal handler",
                 std::strerror(errno));
  }
  install_handler();
}

void TerminationSignals::install_handler() {
  source_ = Source::handler;
  wakeup_.emplace();
  const WakeupFd* expected = nullptr;
  if (!g_wakeup.compare_exchange_strong(expected, &*wakeup_)) {
    throw std::logic_error("TerminationSignals: only one handler at a time");
  }
  struct sigaction action {};
  action.sa_handler = &on_termination_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &action, &previous_term_);
  sigaction(SIGINT, &action, &previous_int_);
  const sigset_t set = termination_set();
  pthread_sigmask(SIG_UNBLOCK, &set, &previous_mask_);
}

TerminationSignals::~TerminationSignals() {
  if (source_ != Source::handler) return;
  pthread_sigmask(SIG_SETMASK, &previous_mask_, nullptr);
  sigaction(SIGTERM, &previous_term_, nullptr);
  sigaction(SIGINT, &previous_int_, nullptr);
  g_wakeup.store(nullptr);
}

int TerminationSignals::fd() const {
  return source_ == Source::signal_fd ? signal_fd_.get() : wakeup_->fd();
}

std::vector<int> TerminationSignals::take() {
  std::vector<int> signals;
  if (source_ == Source::handler) {
    for (auto n = wakeup_->drain(); n > 0; --n) signals.push_back(SIGTERM);
    return signals;
  }
  signalfd_siginfo info{};
  while (::read(signal_fd_.get(), &info, sizeof info) == static_cast<ssize_t>(sizeof info)) {
    signals.push_back(static_cast<int>(info.ssi_signo));
  }
  return signals;
}

}  // namespace dispatch::worker
