// estimate_request_body_bytes: what the adapters' request bodies can cost at most, before any
// is built. The text is measured exactly (escaped as JSON writes it); the JSON around it is
// a constant per element that is at least what any adapter writes for that element (the
// longest form is noted beside each). The constants are what let a request of many tiny
// elements - 100,000 empty tool calls - be refused for what its body would cost.

#include <fmt/format.h>

#include <algorithm>
#include <functional>

#include "dispatch/worker/providers/adapter.hpp"
#include "json_writer.hpp"

namespace dispatch::worker {
namespace {

using detail::json_escaped_size;

// Top-level members and every scalar parameter, e.g. {"model":"","messages":[],"stream":false,
// "stream_options":{"include_usage":true},"temperature":...,"tool_choice":{"type":"function",
// "function":{"name":""}},"response_format":{"type":"json_schema","json_schema":{"name":
// "response","schema":}},"thinking":{"type":"enabled","budget_tokens":...},...}
constexpr std::size_t kFixed = 1024;
// A model from the config (a provider's fallback_model) rather than from the request.
constexpr std::size_t kModelSlack = 256;
// A message with its role (a known one, at most 9 bytes: others are refused), e.g. an anthropic
// turn of its own: {"role":"assistant","content":[{"type":"text","text":""}]}, or an openai
// assistant with calls: {"role":"assistant","content":null,"tool_calls":[]},
constexpr std::size_t kMessage = 64;
// A tool result opening an anthropic user turn of its own:
// {"role":"user","content":[{"type":"tool_result","tool_use_id":"","content":""}]},
constexpr std::size_t kToolMessage = 88;
// ,"thinking":""
constexpr std::size_t kThinking = 16;
// {"id":"","type":"function","index":99999,"function":{"name":"","arguments":""}}, (dashscope)
constexpr std::size_t kToolCall = 80;
// {"type":"image","source":{"type":"base64","media_type":"image/jpeg","data":""}}, (anthropic)
constexpr std::size_t kImage = 96;
// {"type":"function","function":{"name":"","description":"","parameters":}},
constexpr std::size_t kTool = 128;
// {"type":"object","properties":{}}: a tool's schema when it gives none.
constexpr std::size_t kEmptySchema = 33;
// "",
constexpr std::size_t kStop = 4;

// The longest escaped call id and name: what a tool result that names only one side of its
// call may be given as the other side.
struct LinkBound {
  std::size_t id = 0;
  std::size_t name = 0;
};

LinkBound link_bound(const std::vector<protocol::Message>& messages) {
  LinkBound bound;
  for (const protocol::Message& m : messages) {
    for (const protocol::ToolCall& call : m.tool_calls) {
      bound.id = std::max(bound.id, json_escaped_size(call.id));
      bound.name = std::max(bound.name, json_escaped_size(call.name));
    }
  }
  return bound;
}

std::size_t tool_calls_bytes(const protocol::Message& m) {
  std::size_t bytes = 0;
  for (const protocol::ToolCall& call : m.tool_calls) {
    bytes += kToolCall + json_escaped_size(call.id) + json_escaped_size(call.name) +
             std::max<std::size_t>(json_escaped_size(call.arguments), 2);
  }
  return bytes;
}

std::size_t message_bytes(const protocol::Message& m, const LinkBound& links) {
  std::size_t bytes = json_escaped_size(m.content);
  if (m.role == "tool") {
    bytes += kToolMessage + json_escaped_size(m.tool_call_id) + json_escaped_size(m.tool_name);
    if (m.tool_call_id.empty()) bytes += links.id;
    if (m.tool_name.empty()) bytes += links.name;
  } else {
    bytes += kMessage;
  }
  if (!m.thinking.empty()) bytes += kThinking + json_escaped_size(m.thinking);
  for (const std::string& image : m.images) bytes += kImage + json_escaped_size(image);
  return bytes + tool_calls_bytes(m);
}

std::size_t model_bytes(const protocol::Request& request) {
  std::size_t longest = json_escaped_size(request.model);
  if (request.fallbacks) {
    for (const protocol::Target& target : *request.fallbacks) {
      longest = std::max(longest, json_escaped_size(target.model));
    }
  }
  return longest + kModelSlack;
}

std::size_t tools_bytes(const protocol::Request& request) {
  std::size_t bytes = 0;
  for (const protocol::Tool& tool : request.tools) {
    bytes += kTool + json_escaped_size(tool.name) + json_escaped_size(tool.description) +
             std::max(json_escaped_size(tool.parameters), kEmptySchema);
  }
  return bytes;
}

}  // namespace

std::size_t estimate_request_body_bytes(const protocol::Request& request) noexcept {
  std::size_t bytes =
      kFixed + model_bytes(request) + tools_bytes(request) +
      json_escaped_size(request.tool_choice) + json_escaped_size(request.tool_choice_function) +
      json_escaped_size(request.response_format) + json_escaped_size(request.response_schema);
  for (const std::string& stop : request.stop) bytes += kStop + json_escaped_size(stop);
  const LinkBound links = link_bound(request.messages);
  for (const protocol::Message& m : request.messages) bytes += message_bytes(m, links);
  return bytes;
}

namespace {

// libstdc++ keeps up to 15 bytes inside the string object; longer text is one allocation of
// capacity + 1 bytes.
std::size_t heap_of(const std::string& text) {
  const char* data = text.data();
  const auto* object = reinterpret_cast<const char*>(&text);
  const bool inside =
      std::less_equal<>()(object, data) && std::less<>()(data, object + sizeof text);
  return inside ? 0 : text.capacity() + 1;
}

template <class T>
std::size_t storage_of(const std::vector<T>& items) {
  return items.capacity() * sizeof(T);
}

std::size_t heap_of(const protocol::Message& m) {
  std::size_t bytes = heap_of(m.role) + heap_of(m.content) + heap_of(m.thinking) +
                      heap_of(m.tool_call_id) + heap_of(m.tool_name) + storage_of(m.images) +
                      storage_of(m.tool_calls);
  for (const std::string& image : m.images) bytes += heap_of(image);
  for (const protocol::ToolCall& call : m.tool_calls) {
    bytes += heap_of(call.id) + heap_of(call.name) + heap_of(call.arguments);
  }
  return bytes;
}

// A std::map node: the pair, three pointers and a colour.
constexpr std::size_t kMapNodeOverhead = 32;

}  // namespace

std::size_t decoded_request_bytes(const protocol::Request& request) noexcept {
  std::size_t bytes = sizeof(protocol::Request) + heap_of(request.provider) +
                      heap_of(request.model) + storage_of(request.messages) +
                      storage_of(request.stop) + storage_of(request.tools) +
                      heap_of(request.tool_choice) + heap_of(request.tool_choice_function) +
                      heap_of(request.response_format) + heap_of(request.response_schema);
  for (const protocol::Message& m : request.messages) bytes += heap_of(m);
  for (const std::string& stop : request.stop) bytes += heap_of(stop);
  for (const protocol::Tool& tool : request.tools) {
    bytes += heap_of(tool.name) + heap_of(tool.description) + heap_of(tool.parameters);
  }
  if (request.fallbacks) {
    bytes += storage_of(*request.fallbacks);
    for (const protocol::Target& target : *request.fallbacks) {
      bytes += heap_of(target.provider) + heap_of(target.model);
    }
  }
  for (const auto& [key, value] : request.metadata) {
    bytes += kMapNodeOverhead + sizeof(std::pair<const std::string, std::string>) + heap_of(key) +
             heap_of(value);
  }
  return bytes;
}

Result<void, Failure> check_request_body_size(const protocol::Request& request,
                                              std::size_t payload_bytes,
                                              std::size_t max_request_bytes) {
  const std::size_t body = estimate_request_body_bytes(request);
  const std::size_t held = payload_bytes + decoded_request_bytes(request) + body;
  const std::size_t bound = kMaxJobMemoryMultiple * payload_bytes + kJobAllowanceBytes;
  if (body <= max_request_bytes && held <= bound) return {};
  Failure failure;
  failure.kind = protocol::ErrorKind::invalid_request;
  failure.code = "request_too_large";
  if (body > max_request_bytes) {
    failure.message = fmt::format(
        "request too large: its provider body would be about {} bytes, over "
        "worker.max_request_bytes ({})",
        body, max_request_bytes);
  } else {
    failure.message = fmt::format(
        "request too large: a job of {} bytes would take about {} bytes to run (decoded request "
        "and provider body), over {}x its size: too many tiny elements, or text that JSON "
        "escapes six-fold",
        payload_bytes, held, kMaxJobMemoryMultiple);
  }
  return failure;
}

}  // namespace dispatch::worker
