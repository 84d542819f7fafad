#pragma once

#include <chrono>
#include <cstdint>
#include <random>

#include "dispatch/common/random.hpp"

namespace dispatch {

// Every component that reasons about time takes a Clock so tests can drive time by hand.
class Clock {
 public:
  using time_point = std::chrono::steady_clock::time_point;
  using duration = std::chrono::steady_clock::duration;
  virtual ~Clock() = default;
  virtual time_point now() const = 0;
  // Wall-clock time for values users see (created_at, log timestamps), Unix milliseconds.
  virtual int64_t unix_ms() const = 0;
};

class SystemClock final : public Clock {
 public:
  time_point now() const override { return std::chrono::steady_clock::now(); }
  int64_t unix_ms() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
  static SystemClock& instance() {
    static SystemClock clock;
    return clock;
  }
};

// A clock that only moves when a test says so.
class ManualClock final : public Clock {
 public:
  time_point now() const override { return now_; }
  int64_t unix_ms() const override {
    return unix_base_ms_ +
           std::chrono::duration_cast<std::chrono::milliseconds>(now_.time_since_epoch()).count();
  }
  void advance(duration d) { now_ += d; }
  void set_unix_base_ms(int64_t base) { unix_base_ms_ = base; }

 private:
  time_point now_{std::chrono::hours(1)};
  int64_t unix_base_ms_ = 1'700'000'000'000;
};

// Randomness is injected for the same reason: jitter must be reproducible in tests. Not for
// identifiers: those come from random_hex_id() (random.hpp).
class Random {
 public:
  virtual ~Random() = default;
  // Uniform in [0, 1).
  virtual double uniform() = 0;
};

class DefaultRandom final : public Random {
 public:
  DefaultRandom() : engine_(secure_random_seed()) {}
  explicit DefaultRandom(uint64_t seed) : engine_(seed) {}
  double uniform() override { return std::uniform_real_distribution<double>(0.0, 1.0)(engine_); }

 private:
  std::mt19937_64 engine_;
};

}  // namespace dispatch
