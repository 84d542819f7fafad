#pragma once

// Typed errors of a dispatch, mirroring the seed guide's LLMError. Every ErrorKind of the wire
// protocol has a class; catch the base DispatchError to handle them all.
//
//   DispatchError                       kind(), status(), code(), provider(), model(), attempts()
//   ├── UnsupportedProviderError        no worker serves the provider (after the queue deadline)
//   ├── ModelNotAvailableError          the provider does not know the model (404)
//   ├── ApiError                        the provider refused the request with an HTTP error:
//   │   ├── InvalidRequestError           400/422 (also malformed input at the broker)
//   │   ├── AuthenticationError           401/403, missing key; or the broker refused our
//   │   │                                 connection (CURVE: code broker_auth_refused …)
//   │   ├── RateLimitedError              429 after the retries
//   │   ├── OverloadedError               503/529 after the retries
//   │   └── ServerError                   other 5xx after the retries
//   ├── TimeoutError                    connect / first token / idle / total / queue deadline,
//   │                                   or the client-side deadline (code "client_deadline")
//   ├── NetworkError                    transport failure; code "broker_unreachable" when the
//   │                                   broker never acknowledged the job
//   ├── ContextLengthExceededError
//   ├── ContentFilteredError
//   ├── StreamInterruptedError
//   ├── QueueFullError
//   ├── CancelledError
//   └── InternalError                   a bug or invariant of ours; redelivery limit
//
// A kind this build does not know (a newer peer) is thrown as the base DispatchError with
// kind() == ErrorKind::unknown.

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "dispatch/protocol/types.hpp"

namespace dispatch {

using protocol::ErrorKind;

// Codes the client itself puts on errors it raises (no broker or provider involved).
namespace client_code {
inline constexpr const char* broker_unreachable = "broker_unreachable";  // no ack after retries
inline constexpr const char* client_deadline = "client_deadline";        // no answer in time
inline constexpr const char* client_shutdown = "client_shutdown";        // Client destroyed
inline constexpr const char* cancelled_locally = "cancelled_locally";    // broker did not confirm
inline constexpr const char* invalid_response = "invalid_response";      // undecodable reply
// The broker refused the connection itself (CURVE; README, "Troubleshooting"). Every job and
// status request waiting on it fails at once with one of these, kind authentication (network
// for handshake_failed), within one handshake:
inline constexpr const char* broker_auth_refused = "broker_auth_refused";      // key not allowed
inline constexpr const char* broker_requires_curve = "broker_requires_curve";  // we: plaintext
inline constexpr const char* broker_without_curve = "broker_without_curve";    // broker: plaintext
inline constexpr const char* curve_handshake_failed = "curve_handshake_failed";  // wrong key?
inline constexpr const char* handshake_failed = "handshake_failed";  // not a broker there?
}  // namespace client_code

class DispatchError : public std::runtime_error {
 public:
  explicit DispatchError(protocol::Error error);
  ~DispatchError() override = default;
  DispatchError(const DispatchError&) = default;
  DispatchError& operator=(const DispatchError&) = default;

  ErrorKind kind() const noexcept { return error_.kind; }
  // The provider's HTTP status of the decisive attempt; 0 when there was none.
  uint16_t status() const noexcept { return error_.status; }
  // The provider's error code, or ours (e.g. "queue_deadline", "broker_unreachable").
  const std::string& code() const noexcept { return error_.code; }
  const std::string& message() const noexcept { return error_.message; }
  const std::string& provider() const noexcept { return error_.provider; }
  const std::string& model() const noexcept { return error_.model; }
  const std::vector<protocol::Attempt>& attempts() const noexcept { return error_.attempts; }
  const protocol::Error& wire() const noexcept { return error_; }

  // Throws *this as its most derived type, so an error held by pointer keeps its type.
  [[noreturn]] virtual void raise() const { throw *this; }

 private:
  protocol::Error error_;
};

#define DISPATCH_DECLARE_ERROR(Name, Base)                           \
  class Name : public Base {                                         \
   public:                                                           \
    explicit Name(protocol::Error error) : Base(std::move(error)) {} \
    [[noreturn]] void raise() const override { throw *this; }        \
  }

DISPATCH_DECLARE_ERROR(UnsupportedProviderError, DispatchError);
DISPATCH_DECLARE_ERROR(ModelNotAvailableError, DispatchError);
DISPATCH_DECLARE_ERROR(ApiError, DispatchError);
DISPATCH_DECLARE_ERROR(InvalidRequestError, ApiError);
DISPATCH_DECLARE_ERROR(AuthenticationError, ApiError);
DISPATCH_DECLARE_ERROR(RateLimitedError, ApiError);
DISPATCH_DECLARE_ERROR(OverloadedError, ApiError);
DISPATCH_DECLARE_ERROR(ServerError, ApiError);
DISPATCH_DECLARE_ERROR(TimeoutError, DispatchError);
DISPATCH_DECLARE_ERROR(NetworkError, DispatchError);
DISPATCH_DECLARE_ERROR(ContextLengthExceededError, DispatchError);
DISPATCH_DECLARE_ERROR(ContentFilteredError, DispatchError);
DISPATCH_DECLARE_ERROR(StreamInterruptedError, DispatchError);
DISPATCH_DECLARE_ERROR(QueueFullError, DispatchError);
DISPATCH_DECLARE_ERROR(CancelledError, DispatchError);
DISPATCH_DECLARE_ERROR(InternalError, DispatchError);

#undef DISPATCH_DECLARE_ERROR

// The exception of the class matching error.kind.
std::shared_ptr<const DispatchError> make_dispatch_error(protocol::Error error);
[[noreturn]] void throw_dispatch_error(protocol::Error error);
std::exception_ptr make_dispatch_exception(protocol::Error error);

// Convenience for errors the client raises itself.
protocol::Error make_wire_error(ErrorKind kind, std::string code, std::string message);

// True for the client_code values that say the broker refused the connection itself
// (broker_auth_refused … handshake_failed): resubmitting cannot help until the keys, or the
// broker, change.
bool is_connection_refusal(const DispatchError& error) noexcept;

}  // namespace dispatch
