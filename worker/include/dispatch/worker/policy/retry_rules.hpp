#pragma once

// How the policy reads a Failure: may the same target be tried again?
//
// Retryable (same target, after a backoff or the provider's Retry-After):
//   network, timeout from the transport (connect), rate_limited, overloaded, server_error,
//   stream_interrupted — and any failure with HTTP status 408, 409, 429 or 5xx (529 included).
// Never retried on the same target (the job moves on to its next target):
//   invalid_request, authentication, model_not_available, context_length_exceeded,
//   content_filtered, and the silence timeouts our own timers raise (first_token_timeout,
//   idle_timeout): a provider that accepted the request and went quiet is failed over.
// x-should-retry (Failure::should_retry_header): "false" vetoes the retry of a retryable
// failure; "true" forces one for a failure we could not classify (internal / unknown) but can
// never make a client error (400, 401/403, 404, context length, content filter) retryable.

#include <cstdint>
#include <string_view>

#include "dispatch/worker/failure.hpp"

namespace dispatch::worker {

// Codes the policy itself puts into Failure / Attempt / Error.
namespace policy_code {
inline constexpr std::string_view first_token_timeout = "first_token_timeout";
inline constexpr std::string_view idle_timeout = "idle_timeout";
inline constexpr std::string_view deadline = "deadline";
inline constexpr std::string_view missing_terminator = "missing_terminator";
inline constexpr std::string_view circuit_open = "circuit_open";
inline constexpr std::string_view cancelled = "cancelled";
}  // namespace policy_code

bool has_retryable_status(uint16_t status) noexcept;
// A first-token or idle timeout raised by the policy's own timers.
bool is_silence_timeout(const Failure& failure) noexcept;
bool is_retryable(const Failure& failure) noexcept;

}  // namespace dispatch::worker
