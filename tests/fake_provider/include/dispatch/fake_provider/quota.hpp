#pragma once

// Per-API-key quotas of `fake-provider --limit-rpm N --limit-tpm N`, enforced as real providers
// do: at most N requests (tokens) in any sliding minute, and — because providers enforce periods
// shorter than their nominal minute — at most max(1, 2 × N / 60) in any sliding second.
//
// Tokens are charged at admission with what the request will cost (its prompt tokens plus the
// completion tokens of the planned reply: the fake knows its answer before writing it), then
// reconciled when the exchange ends to what was delivered: an error reply costs its prompt only,
// a stream broken off after k content chunks costs prompt + min(k, planned completion).
//
// No I/O; the clock is injected so the windows can be tested on a ManualClock.
//
//   QuotaLimiter quota({.rpm = 600, .tpm = 100'000}, clock);
//   QuotaDecision d = quota.admit(api_key, prompt + completion);
//   if (!d.admitted) → 429 with quota_headers(d, ...), retry after d.retry_after
//   ... later: quota.reconcile(api_key, d.ticket, tokens_actually_used);

#include <chrono>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "dispatch/common/clock.hpp"

namespace dispatch::fake_provider {

struct QuotaLimits {
  int64_t rpm = 0;  // requests per sliding minute; 0: unlimited
  int64_t tpm = 0;  // prompt + completion tokens per sliding minute; 0: unlimited
};

// One limited dimension as the x-ratelimit-* headers report it.
struct QuotaState {
  int64_t limit = 0;      // per minute
  int64_t remaining = 0;  // left in the current sliding minute
  // Until the minute window is empty again ("resets to its initial state", as OpenAI defines
  // x-ratelimit-reset-*): the newest charge's age subtracted from a minute.
  std::chrono::milliseconds reset{0};
};

struct QuotaDecision {
  bool admitted = true;
  bool requests_exceeded = false;  // the request limit refused it (minute or second)
  bool tokens_exceeded = false;    // the token limit refused it
  // Refused: the earliest time from now at which this same request would be admitted, were
  // nothing else admitted meanwhile (a request charged more tokens than the whole minute's
  // quota is never admitted; it reports a minute).
  std::chrono::milliseconds retry_after{0};
  std::optional<QuotaState> requests;  // set when rpm is limited
  std::optional<QuotaState> tokens;    // set when tpm is limited
  uint64_t ticket = 0;                 // admitted: identifies the charge for reconcile()
};

class QuotaLimiter {
 public:
  QuotaLimiter(QuotaLimits limits, const Clock& clock);

  bool enabled() const { return limits_.rpm > 0 || limits_.tpm > 0; }
  const QuotaLimits& limits() const { return limits_; }

  // The per-second ceiling for a per-minute limit: max(1, floor(2 × N / 60)).
  static int64_t per_second(int64_t per_minute);

  // Charges one request of `tokens` tokens to `key` when every window has room; otherwise
  // charges nothing and says which limit refused it and when to come back. A charge larger than
  // the whole per-second token budget is admitted only into an empty second (else it could never
  // pass); one larger than the minute's token quota never is.
  QuotaDecision admit(const std::string& key, int64_t tokens);

  // Replaces the token charge of an admitted request by what it really used (no-op once the
  // charge has left both windows, or when tpm is unlimited).
  void reconcile(const std::string& key, uint64_t ticket, int64_t tokens);

  // Forgets every key's history (POST /_fake/reset).
  void clear();

  // Keys with a charge still inside the minute window (idle keys are dropped as time passes).
  size_t tracked_keys();

 private:
  struct Charge {
    Clock::time_point at;
    uint64_t ticket;
    int64_t tokens;
  };
  // Charges inside one sliding window, oldest first, with their running totals.
  struct Window {
    std::deque<Charge> charges;
    int64_t tokens = 0;
    void expire(Clock::time_point now, Clock::duration length);
    int64_t requests() const { return static_cast<int64_t>(charges.size()); }
  };
  struct KeyState {
    Window minute;
    Window second;
  };

  QuotaState state(const Window& minute, bool tokens, Clock::time_point now) const;
  void prune_idle(Clock::time_point now);

  const QuotaLimits limits_;
  const Clock& clock_;
  std::mutex mutex_;
  std::unordered_map<std::string, KeyState> keys_;
  uint64_t next_ticket_ = 1;
  uint64_t admissions_since_prune_ = 0;
};

// Go's time.Duration text at millisecond resolution, as OpenAI's x-ratelimit-reset-* values:
// "0s", "120ms", "1s", "1.5s", "6m0s", "1h0m0s".
std::string go_duration(std::chrono::milliseconds duration);

// The rate-limit headers of one answer: OpenAI's x-ratelimit-{limit,remaining,reset}-{requests,
// tokens} (only for the limited dimensions) on every format, plus Anthropic's own
// anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset} (RFC 3339 reset time) when
// `anthropic`; on a refusal also Retry-After (whole seconds, rounded up) and retry-after-ms.
std::vector<std::pair<std::string, std::string>> quota_headers(const QuotaDecision& decision,
                                                               bool anthropic, int64_t now_unix_ms);

}  // namespace dispatch::fake_provider
