#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "dispatch/protocol/types.hpp"

namespace dispatch::worker {

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
};

}  // namespace dispatch::worker
