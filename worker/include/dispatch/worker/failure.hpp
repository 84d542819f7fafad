#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "dispatch/protocol/types.hpp"

namespace dispatch::worker {

// A provider's remaining-quota headers on one answer (OpenAI's x-ratelimit-*, Anthropic's
// anthropic-ratelimit-*): reported to the broker so that it paces the whole fleet by them.
// Reset times are converted to milliseconds from now.
struct RateLimitHeaders {
  std::optional<uint64_t> limit_requests;
  std::optional<uint64_t> remaining_requests;
  std::optional<uint64_t> reset_requests_ms;
  std::optional<uint64_t> limit_tokens;
  std::optional<uint64_t> remaining_tokens;
  std::optional<uint64_t> reset_tokens_ms;

  bool any() const noexcept { return remaining_requests || remaining_tokens; }
  bool operator==(const RateLimitHeaders&) const = default;
};

// Why an attempt failed, already classified into the taxonomy. This is all the policy sees of
// a provider's error: it decides on `kind`, `retry_after_ms` and time, never on JSON.
struct Failure {
  protocol::ErrorKind kind = protocol::ErrorKind::internal;
  uint16_t status = 0;  // HTTP status, 0 for transport failures
  std::string code;     // provider error code / type ("rate_limit_exceeded", "overloaded_error")
  std::string message;  // provider's message (keys scrubbed)
  std::optional<uint64_t> retry_after_ms;  // from retry-after-ms / retry-after (secs or date)
  bool should_retry_header = false;        // x-should-retry present ...
  bool should_retry = false;               // ... and its value
  RateLimitHeaders limits;                 // remaining-quota headers of the error answer
};

}  // namespace dispatch::worker
