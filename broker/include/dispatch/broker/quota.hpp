#pragma once

// Fleet-wide provider quotas: the broker sees every job, so it paces dispatch to what each
// provider account allows — requests per minute, tokens per minute, jobs running at once —
// instead of every worker discovering the limit alone through 429s.
//
// Limits are numbers on routing keys, `provider` or `provider/model`; the broker still knows no
// provider format. A job is dispatched only when every limit that applies to it has room.
// Pacing, not bursting: providers enforce limits over periods shorter than a minute, so
// requests go at most `burst` at once (default half a second's worth, rpm/120, at least 1) and
// then at (rpm - burst)/60 per second — no sliding second carries more than 1.5 × rpm/60, and
// no sliding minute more than rpm, a cold start included. Tokens likewise with tpm and
// `token_burst` (default tpm/120).
//
// Tokens are reserved before dispatch from an estimate and corrected when the result reports
// real usage (see estimate_tokens). Feedback from providers pauses a key for the whole fleet
// (a 429's Retry-After) or tightens it (x-ratelimit-remaining-* with their reset times).
//
// No I/O: driven by the broker core with its Clock, tested on a ManualClock.

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dispatch/common/clock.hpp"
#include "dispatch/common/result.hpp"
#include "dispatch/common/token_bucket.hpp"

namespace dispatch::broker {

// One `limits:` entry of broker.yaml. Unset = no limit of that kind.
struct QuotaLimit {
  std::optional<double> rpm;
  std::optional<double> tpm;
  std::optional<uint32_t> concurrency;
  std::optional<double> burst;        // requests that may go at once
  std::optional<double> token_burst;  // tokens that may go at once
  bool operator==(const QuotaLimit&) const = default;
};

struct QuotaConfig {
  std::map<std::string, QuotaLimit, std::less<>> limits;  // "provider" or "provider/model"
  // Answer tokens reserved for a request that sets no max_tokens.
  uint32_t default_answer_tokens = 1024;
};

// broker.yaml text -> config. Errors name the source, the key and the problem, e.g.
// "broker.yaml: limits.openai.rpm: must be a positive number".
Result<QuotaConfig, std::string> parse_quota_config(std::string_view yaml_text,
                                                    std::string_view source_name);

// Reads and parses the file at `path` (dispatch-broker --config, and again on SIGHUP). Errors
// name the file: "cannot read /etc/broker.yaml: No such file or directory".
Result<QuotaConfig, std::string> load_quota_config(const std::string& path);

// The reservation for one job: prompt bytes / 4 (about four bytes of text per token for
// English; the whole Request payload is counted, so field names and structure overshoot a
// little) plus the answer's max_tokens, or the configured default when it sets none.
uint64_t estimate_tokens(std::size_t payload_bytes, std::optional<uint32_t> max_tokens,
                         uint32_t default_answer_tokens);

// What one key (provider or provider/model) has used and may use.
struct QuotaKeyStatus {
  std::string key;
  QuotaLimit limit;
  uint32_t running = 0;
  double requests_last_minute = 0;
  double tokens_last_minute = 0;
  uint64_t waiting = 0;               // filled by the broker: jobs held back by this key
  std::optional<uint64_t> paused_ms;  // time left of a pause from provider feedback
  std::string paused_reason;
};

class QuotaBook {
 public:
  explicit QuotaBook(const Clock& clock);

  // Applies a (re)loaded config. Keys that stay keep their running counts and spent budget;
  // removed keys stop limiting (their running jobs are simply forgotten by them).
  void configure(const QuotaConfig& config);
  const QuotaConfig& config() const noexcept { return config_; }
  // Nothing limits any job: no configured key, no pause or remaining-quota window (expired ones
  // count until forget_expired()).
  bool empty() const noexcept {
    return keys_.empty() && pauses_.empty() && request_allowances_.empty() &&
           token_allowances_.empty();
  }
  // Drops pauses and remaining-quota windows that have ended.
  void forget_expired();
  // Keys with provider feedback (pauses and windows), for the bound on reported keys.
  std::size_t feedback_keys() const noexcept {
    return pauses_.size() + request_allowances_.size() + token_allowances_.size();
  }

  // A reservation held by a job from dispatch to its end.
  struct Ticket {
    std::string provider;
    std::string model;
    uint64_t tokens = 0;
    bool held = false;
  };

  // Whether a job for provider/model reserving `tokens` may be dispatched now; if not, the
  // earliest time it might (Clock::time_point::max() when only a running job's end can free
  // room, e.g. concurrency).
  struct Admission {
    bool allowed = true;
    Clock::time_point retry_at{};
    std::string blocked_by;  // "openai/gpt-4o rpm", for status and logs
    // The provider's own key blocks (so no model of it may go); false when only the
    // provider/model key does.
    bool by_provider = false;
  };
  Admission check(std::string_view provider, std::string_view model, uint64_t tokens) const;
  // Reserves (call when check() allowed it).
  Ticket take(std::string_view provider, std::string_view model, uint64_t tokens);
  // The job ended with `used_tokens` (prompt + completion) as the provider reported them, or
  // nullopt when unknown (failure, lost worker): the reservation stands.
  void settle(Ticket& ticket, std::optional<uint64_t> used_tokens);

  // Provider feedback. A 429 with Retry-After pauses the key until then, fleet-wide.
  void pause(std::string_view key, Clock::duration for_how_long, std::string reason);
  // Remaining-quota headers: at most `remaining` more until `reset_in` passes.
  void observe_remaining_requests(std::string_view key, uint64_t remaining,
                                  Clock::duration reset_in);
  void observe_remaining_tokens(std::string_view key, uint64_t remaining, Clock::duration reset_in);

  // Every configured or paused key, sorted by key.
  std::vector<QuotaKeyStatus> status() const;

 private:
  // Use over the last minute, for status: 60 one-second slots (fixed memory at any rate).
  class MinuteCounter {
   public:
    void add(double amount, Clock::time_point now);
    double total(Clock::time_point now) const;

   private:
    std::array<double, 60> slots_{};
    std::array<int64_t, 60> slot_second_{};
  };
  struct KeyState {
    QuotaLimit limit;
    std::optional<TokenBucket> requests;
    std::optional<TokenBucket> tokens;
    uint32_t running = 0;
    MinuteCounter requests_used;
    MinuteCounter tokens_used;
  };
  // A provider-imposed window: at most `remaining` until `until`.
  struct Allowance {
    double remaining = 0;
    Clock::time_point until{};
  };
  struct Pause {
    Clock::time_point until{};
    std::string reason;
  };

  void apply_limit(KeyState& state, const QuotaLimit& limit);
  const KeyState* find(std::string_view key) const;
  KeyState* find(std::string_view key);
  void check_key(std::string_view key, uint64_t tokens, Admission& admission) const;
  void block(Admission& admission, Clock::time_point retry_at, std::string why) const;

  const Clock& clock_;
  QuotaConfig config_;
  std::map<std::string, KeyState, std::less<>> keys_;
  std::map<std::string, Pause, std::less<>> pauses_;
  std::map<std::string, Allowance, std::less<>> request_allowances_;
  std::map<std::string, Allowance, std::less<>> token_allowances_;
};

// "provider/model", the narrower routing key.
std::string model_key(std::string_view provider, std::string_view model);

}  // namespace dispatch::broker
