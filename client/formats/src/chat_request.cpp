#include "dispatch/formats/chat_request.hpp"

#include "dispatch/request.hpp"
#include "fields.hpp"

namespace dispatch::formats {

using detail::member;
using nlohmann::json;

namespace {

Result<void, RequestError> read_priority(const json& body, ChatRequest& chat) {
  auto name = detail::read_string(body, "priority", "");
  if (!name) return std::move(name).error();
  if (!*name) return {};
  const auto priority = priority_from_string(**name);
  if (!priority) return invalid_field("priority", "must be interactive, normal or batch");
  chat.priority = *priority;
  return {};
}

}  // namespace

Result<void, RequestError> read_extensions(const json& body, ChatRequest& chat) {
  auto timeout = detail::read_uint32(body, "timeout_ms", "");
  if (!timeout) return std::move(timeout).error();
  if (*timeout == 0u) return invalid_field("timeout_ms", "must be at least 1");  // as the protocol
  if (*timeout) chat.request.timeout_ms = **timeout;
  auto retries = detail::read_uint32(body, "retry_count", "");
  if (!retries) return std::move(retries).error();
  if (*retries) chat.request.retry_count = **retries;
  if (auto priority = read_priority(body, chat); !priority) return priority;
  auto fallbacks = detail::read_strings(body, "fallbacks", "", kMaxFallbacks, false);
  if (!fallbacks) return std::move(fallbacks).error();
  if (member(body, "fallbacks") != nullptr) chat.fallbacks = std::move(*fallbacks);
  return {};
}

Result<ResolvedModel, RequestError> resolve_targets(ChatRequest& chat,
                                                    const ModelCatalog& catalog) {
  auto resolved = resolve_model(chat.model, catalog, "model");
  if (!resolved) return resolved;
  chat.request.provider = resolved->target.provider;
  chat.request.model = resolved->target.model;
  if (chat.fallbacks) {
    std::vector<protocol::Target> targets;
    for (std::size_t i = 0; i < chat.fallbacks->size(); ++i) {
      const std::string& name = (*chat.fallbacks)[i];
      if (name.empty()) continue;  // "" is how a caller writes "no fallback" in a header
      auto fallback = resolve_model(name, catalog, path_index("fallbacks", i));
      if (!fallback) return std::move(fallback).error();
      targets.push_back(std::move(fallback->target));
    }
    chat.request.fallbacks = std::move(targets);
  } else if (resolved->fallbacks) {
    chat.request.fallbacks = resolved->fallbacks;
  }
  if (!chat.request.timeout_ms && resolved->timeout_ms) {
    chat.request.timeout_ms = resolved->timeout_ms;
  }
  return resolved;
}

}  // namespace dispatch::formats
