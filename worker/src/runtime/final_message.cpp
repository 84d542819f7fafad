#include "final_message.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "dispatch/common/strings.hpp"

namespace dispatch::worker {
namespace {

// What an error keeps of its message when even that is too large (it never is in practice:
// messages are clipped where they are made).
constexpr std::size_t kMaxFallbackMessage = 4096;

}  // namespace

FinalMessage encode_result(const protocol::Response& response, std::size_t max_frame_bytes) {
  std::string payload = protocol::encode(response);
  if (payload.size() <= max_frame_bytes) return {protocol::Command::result, std::move(payload)};
  spdlog::warn("result of {} bytes does not fit a {}-byte frame: sent as response_too_large",
               payload.size(), max_frame_bytes);
  protocol::Error error;
  error.kind = protocol::ErrorKind::invalid_request;
  error.code = "response_too_large";
  error.message = fmt::format(
      "the answer is {} bytes encoded, over the protocol's frame limit of {} bytes; ask for a "
      "shorter one (max_tokens)",
      payload.size(), max_frame_bytes);
  error.provider = response.provider;
  error.model = response.model;
  error.attempts = response.attempts;
  return encode_error(std::move(error), max_frame_bytes);
}

FinalMessage encode_error(protocol::Error error, std::size_t max_frame_bytes) {
  std::string payload = protocol::encode(error);
  if (payload.size() <= max_frame_bytes) return {protocol::Command::error, std::move(payload)};
  error.attempts.clear();
  payload = protocol::encode(error);
  if (payload.size() <= max_frame_bytes) return {protocol::Command::error, std::move(payload)};
  error.message = clip_marked(error.message, kMaxFallbackMessage);
  error.provider = clip(error.provider, kMaxFallbackMessage);
  error.model = clip(error.model, kMaxFallbackMessage);
  return {protocol::Command::error, protocol::encode(error)};
}

}  // namespace dispatch::worker
