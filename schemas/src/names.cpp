// Wire names of the protocol's enums. The names are part of the protocol (PROTOCOL.md) and
// equal the C++ enumerator identifiers.

#include <array>
#include <optional>
#include <string_view>

#include "dispatch/protocol/codec.hpp"
#include "dispatch/protocol/messages.hpp"
#include "dispatch/protocol/types.hpp"

namespace dispatch::protocol {
namespace {

constexpr std::array<std::string_view, 16> kErrorKindNames = {
    "unknown",
    "unsupported_provider",
    "model_not_available",
    "invalid_request",
    "authentication",
    "rate_limited",
    "overloaded",
    "server_error",
    "timeout",
    "network",
    "context_length_exceeded",
    "content_filtered",
    "stream_interrupted",
    "queue_full",
    "cancelled",
    "internal",
};
static_assert(static_cast<std::size_t>(ErrorKind::internal) + 1 == kErrorKindNames.size());

constexpr std::array<std::string_view, 15> kCommandNames = {
    "submit", "accepted",  "rejected",   "cancel", "job",
    "chunk",  "reset",     "result",     "error",  "ready",
    "credit", "heartbeat", "disconnect", "status", "provider_health",
};
static_assert(static_cast<std::size_t>(Command::provider_health) + 1 == kCommandNames.size());

constexpr std::array<std::string_view, 8> kDecodeErrorNames = {
    "malformed", "wrong_type",       "missing_field",   "invalid_value",
    "bad_tag",   "version_mismatch", "unknown_command", "bad_frame_count",
};
static_assert(static_cast<std::size_t>(DecodeError::Code::bad_frame_count) + 1 ==
              kDecodeErrorNames.size());

template <class Enum, std::size_t N>
std::optional<Enum> find_name(const std::array<std::string_view, N>& names,
                              std::string_view name) noexcept {
  for (std::size_t i = 0; i < N; ++i) {
    if (names[i] == name) return static_cast<Enum>(i);
  }
  return std::nullopt;
}

}  // namespace

std::string_view to_string(ErrorKind kind) noexcept {
  const auto index = static_cast<std::size_t>(kind);
  return index < kErrorKindNames.size() ? kErrorKindNames[index] : kErrorKindNames[0];
}

ErrorKind error_kind_from_string(std::string_view name) noexcept {
  return find_name<ErrorKind>(kErrorKindNames, name).value_or(ErrorKind::unknown);
}

std::string_view to_string(Command command) noexcept {
  const auto index = static_cast<std::size_t>(command);
  return index < kCommandNames.size() ? kCommandNames[index] : std::string_view{};
}

std::optional<Command> command_from_string(std::string_view name) noexcept {
  return find_name<Command>(kCommandNames, name);
}

bool command_has_payload(Command command) noexcept {
  switch (command) {
    case Command::submit:
    case Command::job:
    case Command::result:
    case Command::error:
      return true;
    default:
      return false;
  }
}

std::string_view to_string(DecodeError::Code code) noexcept {
  const auto index = static_cast<std::size_t>(code);
  return index < kDecodeErrorNames.size() ? kDecodeErrorNames[index] : kDecodeErrorNames[0];
}

std::optional<DecodeError::Code> decode_error_code_from_string(std::string_view name) noexcept {
  return find_name<DecodeError::Code>(kDecodeErrorNames, name);
}

}  // namespace dispatch::protocol
