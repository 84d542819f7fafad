#pragma once

// What an HTTP API body asks for, before its model name is resolved to a target. Both API
// readers (OpenAI chat completions, Anthropic messages) produce one.

#include <cstddef>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "dispatch/common/result.hpp"
#include "dispatch/formats/models.hpp"
#include "dispatch/formats/request_error.hpp"
#include "dispatch/protocol/types.hpp"

namespace dispatch::formats {

// Bounds on arrays, so that a body cannot make us build more than it is worth.
inline constexpr std::size_t kMaxMessages = 10'000;
inline constexpr std::size_t kMaxContentParts = 1'000;
inline constexpr std::size_t kMaxToolCalls = 1'000;
inline constexpr std::size_t kMaxTools = 128;
inline constexpr std::size_t kMaxStopSequences = 16;
inline constexpr std::size_t kMaxFallbacks = 16;
inline constexpr std::size_t kMaxMetadataKeys = 64;

struct ChatRequest {
  std::string model;          // as the client wrote it
  protocol::Request request;  // provider/model empty until resolved; request.stream = `stream`
  bool stream = false;
  bool include_usage = false;  // OpenAI stream_options.include_usage
  // Extensions (LiteLLM's names): "priority", and "fallbacks" as written, resolved like the
  // model. "timeout_ms" and "retry_count" go straight into `request`.
  std::optional<protocol::Priority> priority;
  std::optional<std::vector<std::string>> fallbacks;
};

// Reads the extensions every API body may carry: timeout_ms, retry_count, priority, fallbacks.
Result<void, RequestError> read_extensions(const nlohmann::json& body, ChatRequest& chat);

// Resolves `chat.model` and its fallbacks against the catalog and fills in request.provider,
// request.model, request.fallbacks (the body's, else the alias's) and request.timeout_ms (the
// body's, else the alias's). Returns the primary target's resolution.
Result<ResolvedModel, RequestError> resolve_targets(ChatRequest& chat, const ModelCatalog& catalog);

}  // namespace dispatch::formats
