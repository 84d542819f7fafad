#pragma once

// One provider-independent description of an error reply. Each wire format renders it in its
// own body shape (OpenAI {"error":{...}}, Anthropic {"type":"error",...}, Ollama {"error":".."},
// DashScope flat {"code","message","request_id"}), with that provider's usual type/code.

#include <string>
#include <utility>

namespace dispatch::fake_provider {

enum class ErrorKind {
  invalid_request,
  authentication,
  permission,
  not_found,  // the requested model does not exist
  request_timeout,
  conflict,
  request_too_large,
  unprocessable,
  rate_limited,         // too many requests
  rate_limited_tokens,  // too many tokens (--limit-tpm)
  internal,
  bad_gateway,
  unavailable,
  overloaded,
  context_length,
  content_filter,
};

struct FakeError {
  int status = 400;
  ErrorKind kind = ErrorKind::invalid_request;
  // Empty: the format's usual message for the kind.
  std::string message;
  // OpenAI `param` (empty renders as null).
  std::string param;
};

// The kind a provider would report with this HTTP status (scripted `status=S`).
ErrorKind kind_for_status(int status);

inline FakeError invalid_request(std::string message, std::string param = {}) {
  return FakeError{400, ErrorKind::invalid_request, std::move(message), std::move(param)};
}

}  // namespace dispatch::fake_provider
