#include "dispatch/errors.hpp"

#include <cstdlib>
#include <utility>

namespace dispatch {

namespace {

std::string describe(const protocol::Error& error) {
  std::string text(protocol::to_string(error.kind));
  text += ": ";
  text += error.message.empty() ? "(no message)" : error.message;
  std::string details;
  if (error.status != 0) details += "status " + std::to_string(error.status);
  if (!error.code.empty()) {
    if (!details.empty()) details += ", ";
    details += "code " + error.code;
  }
  if (!error.provider.empty()) {
    if (!details.empty()) details += ", ";
    details += error.model.empty() ? error.provider : error.provider + "/" + error.model;
  }
  if (!details.empty()) text += " (" + details + ")";
  return text;
}

template <class E>
std::shared_ptr<const DispatchError> make(protocol::Error error) {
  return std::make_shared<const E>(std::move(error));
}

}  // namespace

DispatchError::DispatchError(protocol::Error error)
    : std::runtime_error(describe(error)), error_(std::move(error)) {}

std::shared_ptr<const DispatchError> make_dispatch_error(protocol::Error error) {
  switch (error.kind) {
    case ErrorKind::unsupported_provider:
      return make<UnsupportedProviderError>(std::move(error));
    case ErrorKind::model_not_available:
      return make<ModelNotAvailableError>(std::move(error));
    case ErrorKind::invalid_request:
      return make<InvalidRequestError>(std::move(error));
    case ErrorKind::authentication:
      return make<AuthenticationError>(std::move(error));
    case ErrorKind::rate_limited:
      return make<RateLimitedError>(std::move(error));
    case ErrorKind::overloaded:
      return make<OverloadedError>(std::move(error));
    case ErrorKind::server_error:
      return make<ServerError>(std::move(error));
    case ErrorKind::timeout:
      return make<TimeoutError>(std::move(error));
    case ErrorKind::network:
      return make<NetworkError>(std::move(error));
    case ErrorKind::context_length_exceeded:
      return make<ContextLengthExceededError>(std::move(error));
    case ErrorKind::content_filtered:
      return make<ContentFilteredError>(std::move(error));
    case ErrorKind::stream_interrupted:
      return make<StreamInterruptedError>(std::move(error));
    case ErrorKind::queue_full:
      return make<QueueFullError>(std::move(error));
    case ErrorKind::cancelled:
      return make<CancelledError>(std::move(error));
    case ErrorKind::internal:
      return make<InternalError>(std::move(error));
    case ErrorKind::unknown:
      break;
  }
  return make<DispatchError>(std::move(error));
}

void throw_dispatch_error(protocol::Error error) {
  make_dispatch_error(std::move(error))->raise();
  std::abort();  // raise() always throws; the compiler cannot see through the virtual call
}

std::exception_ptr make_dispatch_exception(protocol::Error error) {
  try {
    throw_dispatch_error(std::move(error));
  } catch (...) {
    return std::current_exception();
  }
}

protocol::Error make_wire_error(ErrorKind kind, std::string code, std::string message) {
  protocol::Error error;
  error.kind = kind;
  error.code = std::move(code);
  error.message = std::move(message);
  return error;
}

bool is_connection_refusal(const DispatchError& error) noexcept {
  const std::string& code = error.code();
  return code == client_code::broker_auth_refused || code == client_code::broker_requires_curve ||
         code == client_code::broker_without_curve || code == client_code::curve_handshake_failed ||
         code == client_code::handshake_failed;
}

}  // namespace dispatch
