#include "dispatch/common/token_bucket.hpp"

#include <algorithm>
#include <cmath>

namespace dispatch {

TokenBucket::TokenBucket(double rate_per_second, double capacity, Clock::time_point now)
    : rate_(std::max(0.0, rate_per_second)),
      capacity_(std::max(0.0, capacity)),
      tokens_(capacity_),
      updated_(now) {}

double TokenBucket::balance(Clock::time_point now) const noexcept {
  const double elapsed = std::chrono::duration<double>(now - updated_).count();
  if (elapsed <= 0) return tokens_;
  return std::min(capacity_, tokens_ + elapsed * rate_);
}

void TokenBucket::refill(Clock::time_point now) noexcept {
  if (now <= updated_) return;
  tokens_ = balance(now);
  updated_ = now;
}

bool TokenBucket::can_take(double cost, Clock::time_point now) const noexcept {
  const double available = balance(now);
  return available >= cost || available >= capacity_;
}

void TokenBucket::take(double cost, Clock::time_point now) noexcept {
  refill(now);
  tokens_ -= cost;
}

void TokenBucket::give_back(double amount, Clock::time_point now) noexcept {
  refill(now);
  tokens_ = std::min(capacity_, tokens_ + std::max(0.0, amount));
}

Clock::duration TokenBucket::wait_for(double cost, Clock::time_point now) const noexcept {
  const double available = balance(now);
  const double needed = std::min(cost, capacity_) - available;
  if (needed <= 0) return Clock::duration::zero();
  if (rate_ <= 0) return Clock::duration::max();
  const auto wait = std::chrono::duration<double>(needed / rate_);
  // Rounded up so that a timer set for it finds the tokens there.
  return std::chrono::ceil<Clock::duration>(wait);
}

void TokenBucket::reconfigure(double rate_per_second, double capacity,
                              Clock::time_point now) noexcept {
  refill(now);
  rate_ = std::max(0.0, rate_per_second);
  capacity_ = std::max(0.0, capacity);
  tokens_ = std::min(tokens_, capacity_);
}

}  // namespace dispatch
