#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>

#include "dispatch/common/clock.hpp"

namespace dispatch::broker {

// Token bucket: `rate` events per second on average, bursts up to `burst`. Remembers how many
// events it refused so that the next allowed log line can say how many were suppressed.
class RateLimiter {
 public:
  RateLimiter(double rate_per_second, double burst) : rate_(rate_per_second), burst_(burst) {
    tokens_ = burst_;
  }

  bool allow(Clock::time_point now) {
    if (!started_) {
      started_ = true;
      last_ = now;
    }
    const double elapsed = std::chrono::duration<double>(now - last_).count();
    if (elapsed > 0) {
      tokens_ = std::min(burst_, tokens_ + elapsed * rate_);
      last_ = now;
    }
    if (tokens_ >= 1.0) {
      tokens_ -= 1.0;
      return true;
    }
    ++suppressed_;
    return false;
  }

  // Events refused since the last call.
  uint64_t take_suppressed() noexcept {
    const uint64_t n = suppressed_;
    suppressed_ = 0;
    return n;
  }

 private:
  double rate_;
  double burst_;
  double tokens_ = 0;
  bool started_ = false;
  Clock::time_point last_{};
  uint64_t suppressed_ = 0;
};

}  // namespace dispatch::broker
