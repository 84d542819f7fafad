#include "dispatch/worker/policy/retry_rules.hpp"

namespace dispatch::worker {

namespace {

using protocol::ErrorKind;

// Failures that will fail the same way again, whatever a header or status says.
bool is_client_error(const Failure& failure) noexcept {
  switch (failure.kind) {
    case ErrorKind::authentication:
    case ErrorKind::model_not_available:
    case ErrorKind::context_length_exceeded:
    case ErrorKind::content_filtered:
    case ErrorKind::unsupported_provider:
    case ErrorKind::cancelled:
    case ErrorKind::queue_full:
      return true;
    case ErrorKind::invalid_request:
      // A 408/409 may arrive classified as a bad request; those two are worth another try.
      return !has_retryable_status(failure.status);
    default:
      return false;
  }
}

bool is_retryable_class(const Failure& failure) noexcept {
  switch (failure.kind) {
    case ErrorKind::network:
    case ErrorKind::timeout:
    case ErrorKind::rate_limited:
    case ErrorKind::overloaded:
    case ErrorKind::server_error:
    case ErrorKind::stream_interrupted:
      return true;
    default:
      return has_retryable_status(failure.status);
  }
}

}  // namespace

bool has_retryable_status(uint16_t status) noexcept {
  return status == 408 || status == 409 || status == 429 || (status >= 500 && status <= 599);
}

bool is_silence_timeout(const Failure& failure) noexcept {
  return failure.kind == ErrorKind::timeout && (failure.code == policy_code::first_token_timeout ||
                                                failure.code == policy_code::idle_timeout);
}

bool is_retryable(const Failure& failure) noexcept {
  if (is_silence_timeout(failure) || is_client_error(failure)) return false;
  if (failure.should_retry_header) return failure.should_retry;
  return is_retryable_class(failure);
}

}  // namespace dispatch::worker
