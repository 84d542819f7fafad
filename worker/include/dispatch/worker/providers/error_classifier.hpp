#pragma once

// Provider errors are classified here and nowhere else. Each adapter only extracts
// (status, code, type, message) from its own error shape; this file maps them to the taxonomy
// the policy decides on. Transport errors arrive already classified by the engine.

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "dispatch/worker/failure.hpp"
#include "dispatch/worker/http.hpp"

namespace dispatch::worker {

struct ProviderConfig;

// What an adapter read from a provider's error response or in-stream error event.
struct ProviderError {
  uint16_t status = 0;  // HTTP status; 0 for an error event inside a 200 stream
  std::string code;     // "context_length_exceeded", "Throttling.RateQuota", ...
  std::string type;     // "invalid_request_error", "overloaded_error", ...
  std::string message;
};

// Status first, then the provider's code / type / message refine it:
//   400, 422        invalid_request, unless it names the context length (context_length_exceeded
//                   or messages like "maximum context length", "prompt is too long", "Range of
//                   input length", "context window") -> context_length_exceeded, or a content
//                   filter (content_policy_violation, content_filter, DataInspectionFailed,
//                   "content management policy", "content filter(ing)", "safety system")
//                   -> content_filtered
//   401, 403        authentication
//   404             model_not_available
//   408             timeout
//   409             server_error: a conflict the SDKs retry (lock contention on their side)
//   413             invalid_request (request too large; retrying cannot help)
//   429             rate_limited; insufficient_quota / Arrearage (billing, at any status) set
//                   should_retry_header + should_retry=false so the same target is not retried
//   503, 529        overloaded, as is any overloaded_error
//   other 5xx       server_error; other 4xx invalid_request; other statuses server_error
//   0 (in-stream)   from the code / type alone; server_error when nothing is recognised
// Headers give retry-after-ms / retry-after (see parse_retry_after), x-should-retry and the
// remaining-quota headers (parse_rate_limit_headers).
// The message and code are scrubbed of `secrets` (ProviderConfig::secrets(): the API key and
// custom header values) and of anything that looks like a credential.
Failure classify_provider_error(const ProviderError& error, const HttpHeaders& headers,
                                int64_t now_unix_ms, std::span<const std::string> secrets = {});

// retry-after-ms (milliseconds, fractional allowed) wins over retry-after, which is seconds
// (fractional allowed) or an HTTP date taken relative to `now_unix_ms` (a past date gives 0).
// nullopt when absent or unparsable.
std::optional<uint64_t> parse_retry_after(const HttpHeaders& headers, int64_t now_unix_ms);

// Remaining-quota headers: x-ratelimit-{limit,remaining,reset}-{requests,tokens} (OpenAI,
// DashScope compatible mode and servers like it; reset as a Go duration, "120ms", "1.5s",
// "6m0s", or seconds) and anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset} (reset
// an RFC 3339 time, taken relative to `now_unix_ms`). Unparsable values are left unset.
RateLimitHeaders parse_rate_limit_headers(const HttpHeaders& headers, int64_t now_unix_ms);

// A transport error from the engine as the Failure the policy sees (status 0), with curl's
// text as the message (scrubbed).
Failure failure_from_transport(const TransportError& error,
                               std::span<const std::string> secrets = {});

// The same, with one sentence for people instead of curl's text, naming the provider and its
// base URL (without any user:password part) and never the key, e.g.
//   cannot connect to ollama at http://127.0.0.1:11434: connection refused (is the server running?)
// kind and code (curl_N) are the engine's, unchanged.
Failure failure_from_transport(const TransportError& error, const ProviderConfig& provider);

// An answer larger than worker.max_response_bytes (`limit`): invalid_request with code
// response_too_large. Not retried - the same request would bring the same answer - but a
// fallback target may still be tried, as for any invalid_request.
Failure response_too_large(std::size_t limit);

// Replaces each of `secrets` (values of 6 characters or more: shorter ones would blank out
// ordinary words), "sk-..." style keys and "Bearer <token>" credentials with "***".
std::string scrub_secrets(std::string_view text, std::span<const std::string> secrets);
std::string scrub_secrets(std::string_view text, std::string_view api_key = {});

}  // namespace dispatch::worker
