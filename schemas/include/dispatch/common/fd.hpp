#pragma once

// RAII for file descriptors. Every descriptor the project opens is owned by one of these.

#include <initializer_list>
#include <utility>

namespace dispatch {

// Owns one descriptor and closes it; movable, not copyable.
class UniqueFd {
 public:
  UniqueFd() noexcept = default;
  explicit UniqueFd(int fd) noexcept : fd_(fd) {}
  ~UniqueFd() { reset(); }
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const noexcept { return fd_; }
  bool valid() const noexcept { return fd_ >= 0; }
  explicit operator bool() const noexcept { return valid(); }
  // Closes the descriptor held (if any) and takes `fd`.
  void reset(int fd = -1) noexcept;
  // Gives the descriptor up without closing it.
  int release() noexcept { return std::exchange(fd_, -1); }

 private:
  int fd_ = -1;
};

// A non-blocking eventfd used as a wake-up: other threads (or a signal handler: both calls are
// single async-signal-safe system calls) signal(), the owner polls fd() and drain()s.
class WakeupFd {
 public:
  WakeupFd();  // throws std::system_error
  int fd() const noexcept { return fd_.get(); }
  void signal() const noexcept;
  // Consumes every pending signal; returns how many there were.
  unsigned long long drain() const noexcept;

 private:
  UniqueFd fd_;
};

// signalfd(2) for `signals` (which the caller has blocked in every thread), non-blocking.
// Invalid (valid() false, errno set) when the kernel refuses; the caller decides what that means.
UniqueFd open_signal_fd(std::initializer_list<int> signals) noexcept;

}  // namespace dispatch
