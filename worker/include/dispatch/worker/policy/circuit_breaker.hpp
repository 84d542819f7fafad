#pragma once

// Circuit breakers for all jobs of one worker, one per (provider, model): one bad model never
// blocks its siblings on the same provider.
//
// Only provider-health outcomes count: successes, and failures of kind network, timeout,
// overloaded, server_error and stream_interrupted (is_health_failure). A 400, a 401, a 404, a
// context-length or content-filter answer says nothing about the provider's health and is not
// counted — and neither is a rate limit (429): that is the account's quota, which the broker
// paces fleet-wide; opening the circuit on it would fail every later job fast.
//
//   closed     calls go through. Opens after `breaker_failures` consecutive failures, or when
//              the failure rate over the last `breaker_window` outcomes reaches
//              `breaker_failure_rate` (with at least window/2 samples).
//   open       every job skips the target at once (attempt outcome "circuit_open") for
//              `breaker_cooldown_ms` — or longer when the failure that opened it carried a
//              Retry-After (up to `retry_after_cap_ms`).
//   half_open  the cooldown passed: exactly ONE job's attempt goes through as the probe, every
//              other job keeps skipping. The probe's success closes the circuit with a clean
//              slate; its failure opens it for another cooldown. A probe that ends without a
//              verdict (cancelled, deadline, a non-health error) frees the slot for the next job.
//
// While open or half-open, outcomes of attempts that were already in flight when it opened are
// ignored: only the probe decides. Thresholds come from the target provider's PolicySettings
// (0 disables the consecutive rule; a window of 0 or a rate <= 0 disables the rate rule).
// Thread-safe (a mutex), so status reporting may read it from another thread.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "dispatch/common/clock.hpp"
#include "dispatch/protocol/types.hpp"
#include "dispatch/worker/config.hpp"

namespace dispatch::worker {

enum class BreakerState : uint8_t { closed, open, half_open };
std::string_view to_string(BreakerState state) noexcept;

// Failure kinds that say something about a provider's health (and feed the breaker).
bool is_health_failure(protocol::ErrorKind kind) noexcept;

// What an outcome did to a circuit, so that the worker can tell the broker (shared health).
struct BreakerChange {
  enum class Kind : uint8_t { none, opened, closed };
  Kind kind = Kind::none;
  uint64_t cooldown_ms = 0;  // opened: for how long
};

struct BreakerStatus {
  std::string provider;
  std::string model;
  BreakerState state = BreakerState::closed;
  uint32_t consecutive_failures = 0;
  uint32_t window_samples = 0;
  uint32_t window_failures = 0;
  uint64_t open_remaining_ms = 0;  // while open: time left in the cooldown
  bool probe_in_flight = false;
  uint64_t times_opened = 0;
};

class CircuitBreakers {
 public:
  enum class Admission : uint8_t {
    allow,   // closed: go ahead
    probe,   // half-open and the caller holds the single probe slot: report its verdict
    reject,  // open, or half-open with the probe taken by someone else: skip the target
  };

  explicit CircuitBreakers(const Clock& clock);
  CircuitBreakers(const CircuitBreakers&) = delete;
  CircuitBreakers& operator=(const CircuitBreakers&) = delete;

  // Asks to call the target now. A `probe` admission must be answered by exactly one of
  // record_success / record_failure (with probe = true) or release_probe.
  Admission admit(std::string_view provider, std::string_view model);
  // Whether admit() would let a call through now, without taking the probe slot.
  bool would_admit(std::string_view provider, std::string_view model) const;

  BreakerChange record_success(std::string_view provider, std::string_view model,
                               const PolicySettings& settings, bool probe);
  // `retry_after_ms`: the failure's Retry-After, which lengthens the cooldown when this failure
  // opens the circuit.
  BreakerChange record_failure(std::string_view provider, std::string_view model,
                               const PolicySettings& settings,
                               std::optional<uint64_t> retry_after_ms, bool probe);
  void release_probe(std::string_view provider, std::string_view model);

  BreakerState state(std::string_view provider, std::string_view model) const;
  BreakerStatus status(std::string_view provider, std::string_view model) const;
  // Every tracked (provider, model) that is not plainly healthy (open, half-open or with
  // failures counted), for `dispatch status` and logs.
  std::vector<BreakerStatus> snapshot() const;

  // Entries are created on first outcome; healthy ones are dropped beyond this many so that
  // arbitrary client-chosen model names cannot grow the map without bound.
  static constexpr std::size_t kMaxEntries = 10'000;

 private:
  struct Entry {
    std::string provider;
    std::string model;
    bool open = false;  // open, or half-open once `open_until` has passed
    Clock::time_point open_until{};
    bool probe_in_flight = false;
    uint32_t consecutive_failures = 0;
    std::deque<bool> window;  // most recent outcomes last, true = failure
    uint64_t times_opened = 0;
  };

  static std::string key_of(std::string_view provider, std::string_view model);
  Entry* find(std::string_view provider, std::string_view model);
  const Entry* find(std::string_view provider, std::string_view model) const;
  Entry* find_or_create(std::string_view provider, std::string_view model);
  BreakerState state_of(const Entry& entry) const;
  BreakerStatus status_of(const Entry& entry) const;
  void push_outcome(Entry& entry, const PolicySettings& settings, bool failure);
  BreakerChange open(Entry& entry, const PolicySettings& settings,
                     std::optional<uint64_t> retry_after_ms, std::string_view why);

  const Clock& clock_;
  mutable std::mutex mutex_;
  std::unordered_map<std::string, Entry> entries_;
};

}  // namespace dispatch::worker
