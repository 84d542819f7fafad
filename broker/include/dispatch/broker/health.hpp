#pragma once

// Shared provider health: the circuit breakers of every worker, seen by the broker and applied
// to the whole fleet. A worker whose breaker opens for a target (provider/model) reports it
// (ProviderHealth kind circuit_open); the broker then sends no job whose first target it is to
// any worker for the cooldown. After it, exactly one job goes as the half-open probe; its
// outcome, read from the attempts of its result or error, decides for everyone: an attempt that
// succeeded on the target closes the circuit, a health failure (network, timeout, overloaded,
// server_error, stream_interrupted) opens it for another cooldown, anything else (the job was
// cancelled, lost, or never tried the target) frees the probe for the next job. A worker's
// circuit_closed report closes it too.
//
// No I/O: driven by the broker core with its Clock, tested on a ManualClock.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dispatch/common/clock.hpp"
#include "dispatch/protocol/types.hpp"

namespace dispatch::broker {

class FleetHealth {
 public:
  // Keys are client-chosen model names reported by workers: bounded so that reports cannot
  // grow the table without limit (open circuits past it are not tracked fleet-wide).
  static constexpr std::size_t kMaxKeys = 10'000;

  explicit FleetHealth(const Clock& clock);

  bool empty() const noexcept { return circuits_.empty(); }

  // What a job whose first target is `key` may do now.
  struct Gate {
    enum class Verdict : uint8_t { go, probe, held };
    Verdict verdict = Verdict::go;
    Clock::time_point retry_at{};  // held: when the cooldown ends (max(): a probe decides)
  };
  Gate check(std::string_view key) const;

  // A worker's breaker opened for `key` for `cooldown` (the latest end wins).
  void open(std::string_view key, Clock::duration cooldown, std::string reason);
  // A worker's breaker closed (its probe succeeded), or the broker's probe did: healthy again.
  void close(std::string_view key);
  // The job `job_id` goes as the half-open probe of `key`.
  void take_probe(std::string_view key, std::string_view job_id);
  // The probe job ended; `attempts` are its attempt records (empty when unknown: lost,
  // cancelled). Returns true when the circuit closed.
  bool probe_ended(std::string_view key, std::string_view job_id,
                   const std::vector<protocol::Attempt>* attempts);

  // Keys open (or half-open with the probe taken) now, except `except`, at most `limit`: the
  // targets a job header tells the worker to skip.
  std::vector<std::string> open_keys(std::string_view except, std::size_t limit) const;

  struct KeyStatus {
    std::string key;
    std::string state;  // "open" or "half_open"
    std::optional<uint64_t> open_ms;
    std::string reason;
  };
  std::vector<KeyStatus> status() const;

 private:
  struct Circuit {
    Clock::time_point open_until{};
    Clock::duration cooldown{};
    std::string probe_job;  // empty: no probe in flight
    std::string reason;
  };

  const Clock& clock_;
  std::map<std::string, Circuit, std::less<>> circuits_;
};

// Attempt outcomes that say something about a target's health (a rate limit does not: it is
// the account's quota, not a broken provider).
bool is_health_outcome(std::string_view outcome) noexcept;

}  // namespace dispatch::broker
