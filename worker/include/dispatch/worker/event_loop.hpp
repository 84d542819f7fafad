#pragma once

// The worker's single event loop: epoll for file descriptors (curl's sockets, the ZeroMQ FD,
// a wake-up eventfd, a signalfd) and a timer heap, so one thread drives thousands of transfers.

#include <cstdint>
#include <functional>
#include <memory>

#include "dispatch/common/clock.hpp"
#include "dispatch/worker/scheduler.hpp"

namespace dispatch::worker {

// Bit flags for fd interest and readiness, or-ed together (constants rather than an enum, whose
// values would not combine without casts).
inline constexpr uint32_t kReadable = 1u;
inline constexpr uint32_t kWritable = 2u;
inline constexpr uint32_t kError = 4u;

class EventLoop final : public Scheduler {
 public:
  using FdCallback = std::function<void(uint32_t ready_events)>;

  explicit EventLoop(const Clock& clock = SystemClock::instance());
  ~EventLoop() override;
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  // Level-triggered watch of `fd` for `events` (kReadable | kWritable). One watch per fd;
  // watching again replaces the callback and interest. Unwatch before closing the fd.
  void watch(int fd, uint32_t events, FdCallback callback);
  void unwatch(int fd);

  // Scheduler
  const Clock& clock() const override { return clock_; }
  TimerId schedule_at(Clock::time_point at, std::function<void()> fn) override;
  void cancel(TimerId id) override;

  // Runs callbacks until stop(). Each iteration waits at most `max_wait_ms` when idle.
  void run();
  // Runs one iteration: waits up to `timeout_ms` (0 = poll) for fds, then due timers.
  // Returns the number of callbacks run.
  int run_once(int timeout_ms);
  // Safe from any thread and from signal context: makes run() return after this iteration.
  void stop();
  // Safe from any thread: wakes the loop and runs `fn` on the loop thread.
  void post(std::function<void()> fn);

  std::size_t pending_timers() const;

 private:
  struct Impl;
  const Clock& clock_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dispatch::worker
