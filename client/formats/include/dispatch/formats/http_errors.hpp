#pragma once

// Failures as the HTTP APIs report them: the status each API's SDKs expect for one of our
// error kinds, and the error bodies of both formats (OpenAI's {"error":{…}}, Anthropic's
// {"type":"error","error":{…}}), whole or as a stream event.
//
//   kind / code                                   status
//   invalid_request, context_length_exceeded,     400
//   content_filtered
//   model_not_available                           404
//   rate_limited, queue_full                      429 (Retry-After)
//   queue_full/draining, unsupported_provider,    503 (Retry-After)
//   overloaded, network/broker_unreachable,
//   cancelled
//   authentication (the provider refused the      502
//   worker's key), server_error, network,
//   stream_interrupted
//   timeout                                       504
//   internal, unknown                             500
//
// Anthropic's own API answers an overloaded provider with 529 (its SDKs' OverloadedError), so
// /v1/messages does too: `anthropic_status`.

#include <string>
#include <string_view>

#include "dispatch/formats/request_error.hpp"
#include "dispatch/protocol/types.hpp"

namespace dispatch::formats {

struct HttpError {
  int status = 500;
  std::string message;
  std::string param;         // OpenAI's `param`; "" when none
  std::string code;          // OpenAI's `code`: our error code, else our kind name
  int retry_after_s = 0;     // > 0: a Retry-After header (seconds)
  int anthropic_status = 0;  // when Anthropic's API answers with another status (529)

  int status_for_anthropic() const { return anthropic_status != 0 ? anthropic_status : status; }
};

HttpError http_error_from(const RequestError& error);
HttpError http_error_from(const protocol::Error& error);
// An error of the gateway itself (auth, limits, routing): status, message and code.
HttpError http_error(int status, std::string message, std::string code);

// "invalid_request_error", "authentication_error", "permission_error", "not_found_error",
// "request_too_large", "rate_limit_error", "api_error", "overloaded_error", "timeout_error".
std::string_view anthropic_error_type(int status) noexcept;
// OpenAI's types: "invalid_request_error", "authentication_error", "permission_error",
// "not_found_error", "rate_limit_error", "server_error", "timeout_error".
std::string_view openai_error_type(int status) noexcept;
// The reason phrase of a status line ("Not Found").
std::string_view status_reason(int status) noexcept;

// {"error":{"message","type","param","code"}}
std::string openai_error_body(const HttpError& error);
// {"type":"error","error":{"type","message"},"request_id"}
std::string anthropic_error_body(const HttpError& error, std::string_view request_id);
// The same as stream events: `data: {"error":{…}}` (the OpenAI SDKs throw on it) and
// `event: error` (the Anthropic SDKs throw on it).
std::string openai_error_event(const HttpError& error);
std::string anthropic_error_event(const HttpError& error, std::string_view request_id);

}  // namespace dispatch::formats
