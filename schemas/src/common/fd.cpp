#include "dispatch/common/fd.hpp"

#include <signal.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <system_error>

namespace dispatch {

void UniqueFd::reset(int fd) noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

WakeupFd::WakeupFd() : fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
  if (!fd_) throw std::system_error(errno, std::generic_category(), "eventfd");
}

void WakeupFd::signal() const noexcept {
  const uint64_t one = 1;
  // EAGAIN only when the counter is saturated, i.e. a wake-up is already pending.
  [[maybe_unused]] const auto written = ::write(fd_.get(), &one, sizeof one);
}

unsigned long long WakeupFd::drain() const noexcept {
  uint64_t value = 0;
  if (::read(fd_.get(), &value, sizeof value) != static_cast<ssize_t>(sizeof value)) return 0;
  return value;
}

UniqueFd open_signal_fd(std::initializer_list<int> signals) noexcept {
  sigset_t set;
  sigemptyset(&set);
  for (const int signo : signals) sigaddset(&set, signo);
  return UniqueFd(::signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC));
}

}  // namespace dispatch
