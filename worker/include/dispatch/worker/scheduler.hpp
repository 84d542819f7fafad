#pragma once

#include <cstdint>
#include <functional>

#include "dispatch/common/clock.hpp"

namespace dispatch::worker {

using TimerId = uint64_t;
inline constexpr TimerId kNoTimer = 0;

// Timers on the worker's single event loop. The policy takes this interface so tests drive it
// with a manual clock (ManualScheduler in tests) instead of waiting.
class Scheduler {
 public:
  virtual ~Scheduler() = default;
  virtual const Clock& clock() const = 0;
  // Runs `fn` on the loop thread once the clock reaches `at` (or later). Never runs inline.
  virtual TimerId schedule_at(Clock::time_point at, std::function<void()> fn) = 0;
  // Cancelling a timer that fired or was cancelled is a no-op.
  virtual void cancel(TimerId id) = 0;

  TimerId schedule_after(Clock::duration delay, std::function<void()> fn) {
    return schedule_at(clock().now() + delay, std::move(fn));
  }
};

}  // namespace dispatch::worker
