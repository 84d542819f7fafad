#pragma once

// A token bucket on an injected clock: `rate` tokens per second refill it up to `capacity`.
// Used to pace requests and tokens towards a provider (broker quotas) and to rate-limit log
// lines and replies. Taking more than the capacity is allowed when the bucket is full: the
// balance goes negative and later takers wait until it has refilled — so one request larger
// than a burst still goes, and the average rate still holds.

#include <chrono>

#include "dispatch/common/clock.hpp"

namespace dispatch {

class TokenBucket {
 public:
  TokenBucket() = default;
  // Starts full.
  TokenBucket(double rate_per_second, double capacity, Clock::time_point now);

  double rate() const noexcept { return rate_; }
  double capacity() const noexcept { return capacity_; }
  // Tokens available at `now` (negative while in debt).
  double balance(Clock::time_point now) const noexcept;

  // True when `cost` may be taken now: the balance covers it, or the bucket is full (a cost
  // over the capacity can never be covered otherwise).
  bool can_take(double cost, Clock::time_point now) const noexcept;
  // Takes `cost` (may leave a debt). Call after can_take(), or to charge unconditionally.
  void take(double cost, Clock::time_point now) noexcept;
  // Gives tokens back (a reservation that turned out too large), never above the capacity.
  void give_back(double amount, Clock::time_point now) noexcept;
  // How long until can_take(cost) holds; zero when it already does. A zero rate never refills:
  // returns Clock::duration::max() when it would have to.
  Clock::duration wait_for(double cost, Clock::time_point now) const noexcept;
  // New rate and capacity (config reload), keeping the current balance (clamped).
  void reconfigure(double rate_per_second, double capacity, Clock::time_point now) noexcept;

 private:
  void refill(Clock::time_point now) noexcept;

  double rate_ = 0;
  double capacity_ = 0;
  double tokens_ = 0;
  Clock::time_point updated_{};
};

}  // namespace dispatch
