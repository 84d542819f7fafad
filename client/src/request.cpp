#include "dispatch/request.hpp"

#include <algorithm>
#include <cstdint>
#include <utility>

namespace dispatch {

std::string_view provider_name(Provider provider) noexcept {
  switch (provider) {
    case Provider::ollama:
      return "ollama";
    case Provider::ali:
      return "ali";
    case Provider::openai:
      return "openai";
    case Provider::claude:
      return "claude";
  }
  return "unknown";
}

Target parse_target(std::string_view text) {
  const auto slash = text.find('/');
  if (slash == std::string_view::npos) {
    throw InvalidTargetError("target '" + std::string(text) + "' is not \"provider/model\"");
  }
  Target target{std::string(text.substr(0, slash)), std::string(text.substr(slash + 1))};
  if (target.provider.empty()) {
    throw InvalidTargetError("target '" + std::string(text) + "' has an empty provider");
  }
  if (target.model.empty()) {
    throw InvalidTargetError("target '" + std::string(text) + "' has an empty model");
  }
  return target;
}

std::optional<Target> parse_optional_target(std::string_view text) {
  const auto slash = text.find('/');
  if (text.empty() || slash == std::string_view::npos || slash + 1 == text.size()) {
    if (slash == 0) {
      throw InvalidTargetError("target '" + std::string(text) + "' has an empty provider");
    }
    return std::nullopt;
  }
  return parse_target(text);
}

std::optional<Priority> priority_from_string(std::string_view name) noexcept {
  if (name == "interactive") return Priority::interactive;
  if (name == "normal") return Priority::normal;
  if (name == "batch") return Priority::batch;
  return std::nullopt;
}

std::string_view to_string(Priority priority) noexcept {
  switch (priority) {
    case Priority::interactive:
      return "interactive";
    case Priority::normal:
      return "normal";
    case Priority::batch:
      return "batch";
  }
  return "unknown";
}

Message::Message(std::string role_name, std::string text) {
  role = std::move(role_name);
  content = std::move(text);
}

Message Message::tool(std::string call_id, std::string name, std::string result_text) {
  Message message("tool", std::move(result_text));
  message.tool_call_id = std::move(call_id);
  message.tool_name = std::move(name);
  return message;
}

Message& Message::with_image(std::string base64) & {
  images.push_back(std::move(base64));
  return *this;
}
Message&& Message::with_image(std::string base64) && {
  return std::move(with_image(std::move(base64)));
}
Message& Message::with_images(std::vector<std::string> base64_images) & {
  for (auto& image : base64_images) images.push_back(std::move(image));
  return *this;
}
Message&& Message::with_images(std::vector<std::string> base64_images) && {
  return std::move(with_images(std::move(base64_images)));
}
Message& Message::with_tool_calls(std::vector<ToolCall> calls) & {
  tool_calls = std::move(calls);
  return *this;
}
Message&& Message::with_tool_calls(std::vector<ToolCall> calls) && {
  return std::move(with_tool_calls(std::move(calls)));
}
Message& Message::with_thinking(std::string text) & {
  thinking = std::move(text);
  return *this;
}
Message&& Message::with_thinking(std::string text) && {
  return std::move(with_thinking(std::move(text)));
}

namespace {
std::vector<protocol::Message> to_wire(std::vector<Message> messages) {
  std::vector<protocol::Message> wire;
  wire.reserve(messages.size());
  for (auto& message : messages)
    wire.push_back(std::move(static_cast<protocol::Message&>(message)));
  return wire;
}
}  // namespace

DispatchRequest::DispatchRequest(Provider provider, std::string model,
                                 std::vector<Message> messages)
    : DispatchRequest(std::string(provider_name(provider)), std::move(model), std::move(messages)) {
}

DispatchRequest::DispatchRequest(std::string provider, std::string model,
                                 std::vector<Message> messages) {
  request_.provider = std::move(provider);
  request_.model = std::move(model);
  request_.messages = to_wire(std::move(messages));
}

DispatchRequest::DispatchRequest(protocol::Request request) : request_(std::move(request)) {}

// The rvalue overload of every builder forwards to the lvalue one.
#define DISPATCH_RVALUE_BUILDER(name, param_decl, arg)    \
  DispatchRequest&& DispatchRequest::name(param_decl)&& { \
    return std::move(name(arg));                          \
  }

DispatchRequest& DispatchRequest::with_temperature(double temperature) & {
  request_.temperature = temperature;
  return *this;
}
DISPATCH_RVALUE_BUILDER(with_temperature, double temperature, temperature)

DispatchRequest& DispatchRequest::with_max_tokens(uint32_t max_tokens) & {
  request_.max_tokens = max_tokens;
  return *this;
}
DISPATCH_RVALUE_BUILDER(with_max_tokens, uint32_t max_tokens, max_tokens)

DispatchRequest& DispatchRequest::with_top_p(double top_p) & {
  request_.top_p = top_p;
  return *this;
}
DISPATCH_RVALUE_BUILDER(with_top_p, double top_p, top_p)

DispatchRequest& DispatchRequest::with_stop(std::vector<std::string> stop) & {
  request_.stop = std::move(stop);
  return *this;
}
DISPATCH_RVALUE_BUILDER(with_stop, std::vector<std::string> stop, std::move(stop))

DispatchRequest& DispatchRequest::with_stream(bool stream) & {
  request_.stream = stream;
  return *this;
}
DISPATCH_RVALUE_BUILDER(with_stream, bool stream, stream)

DispatchRequest& DispatchRequest::with_timeout_ms(uint32_t timeout_ms) & {
  request_.timeout_ms = timeout_ms;
  return *this;
}
DISPATCH_RVALUE_BUILDER(with_timeout_ms, uint32_t timeout_ms, timeout_ms)

DispatchRequest& DispatchRequest::with_timeout(std::chrono::milliseconds timeout) & {
  const auto clamped = std::clamp<int64_t>(timeout.count(), 0, UINT32_MAX);
  return with_timeout_ms(static_cast<uint32_t>(clamped));
}
DISPATCH_RVALUE_BUILDER(with_timeout, std::chrono::milliseconds timeout, timeout)

DispatchRequest& DispatchRequest::with_retry_count(uint32_t retry_count) & {
  request_.retry_count = retry_count;
  return *this;
}
DISPATCH_RVALUE_BUILDER(with_retry_count, uint32_t retry_count, retry_count)

DispatchRequest& DispatchRequest::with_fallbacks(std::vector<Target> targets) & {
  request_.fallbacks = std::move(targets);
  return *this;
}
DISPATCH_RVALUE_BUILDER(with_fallbacks, std::vector<Target> targets, std::move(targets))

DispatchRequest& DispatchRequest::with_fallbacks(const std::vector<std::string>& targets) & {
  std::vector<Target> parsed;
  parsed.reserve(targets.size());
  for (const auto& text : targets) parsed.push_back(parse_target(text));
  return with_fallbacks(std::move(parsed));
}
DISPATCH_RVALUE_BUILDER(with_fallbacks, const std::vector<std::string>& targets, targets)

DispatchRequest& DispatchRequest::with_fallbacks(
    std::initializer_list<std::string_view> targets) & {
  std::vector<Target> parsed;
  parsed.reserve(targets.size());
  for (const auto text : targets) parsed.push_back(parse_target(text));
  return with_fallbacks(std::move(parsed));
}
DISPATCH_RVALUE_BUILDER(with_fallbacks, std::initializer_list<std::string_view> targets, targets)

DispatchRequest& DispatchRequest::with_fallback(Target target) & {
  if (!request_.fallbacks) request_.fallbacks.emplace();
  request_.fallbacks->push_back(std::move(target));
  return *this;
}
DISPATCH_RVALUE_BUILDER(with_fallback, Target target, std::move(target))

DispatchRequest& DispatchRequest::with_fallback(Provider provider, std::string model) & {
  return with_fallback(Target{std::string(provider_name(provider)), std::move(model)});
}
DispatchRequest&& DispatchRequest::with_fallback(Provider provider, std::string model) && {
  return std::move(with_fallback(provider, std::move(model)));
}

DispatchRequest& DispatchRequest::with_no_fallback() & {
  request_.fallbacks.emplace();
  return *this;
}
DispatchRequest&& DispatchRequest::with_no_fallback() && {
  return std::move(with_no_fallback());
}

DispatchRequest& DispatchRequest::with_tools(std::vector<Tool> tools) & {
  request_.tools.clear();
  for (auto& tool : tools) request_.tools.push_back(std::move(static_cast<protocol::Tool&>(tool)));
  return *this;
}
DISPATCH_RVALUE_BUILDER(with_tools, std::vector<Tool> tools, std::move(tools))

DispatchRequest& DispatchRequest::with_tool_choice(ToolChoice choice) & {
  request_.tool_choice = std::move(choice.mode);
  request_.tool_choice_function = std::move(choice.function);
  return *this;
}
DISPATCH_RVALUE_BUILDER(with_tool_choice, ToolChoice choice, std::move(choice))

DispatchRequest& DispatchRequest::with_response_format(std::string format) & {
  request_.response_format = std::move(format);
  return *this;
}
DISPATCH_RVALUE_BUILDER(with_response_format, std::string format, std::move(format))

DispatchRequest& DispatchRequest::with_json_schema(std::string schema_json) & {
  request_.response_format = "json_schema";
  request_.response_schema = std::move(schema_json);
  return *this;
}
DISPATCH_RVALUE_BUILDER(with_json_schema, std::string schema_json, std::move(schema_json))

DispatchRequest& DispatchRequest::with_priority(Priority priority) & {
  priority_ = priority;
  return *this;
}
DISPATCH_RVALUE_BUILDER(with_priority, Priority priority, priority)

DispatchRequest& DispatchRequest::with_metadata(std::string key, std::string value) & {
  request_.metadata[std::move(key)] = std::move(value);
  return *this;
}
DispatchRequest&& DispatchRequest::with_metadata(std::string key, std::string value) && {
  return std::move(with_metadata(std::move(key), std::move(value)));
}

DispatchRequest& DispatchRequest::with_thinking(bool enabled) & {
  request_.think = enabled;
  return *this;
}
DISPATCH_RVALUE_BUILDER(with_thinking, bool enabled, enabled)

DispatchRequest& DispatchRequest::with_thinking_budget(uint32_t budget_tokens) & {
  request_.think = true;
  request_.thinking_budget = budget_tokens;
  return *this;
}
DISPATCH_RVALUE_BUILDER(with_thinking_budget, uint32_t budget_tokens, budget_tokens)

DispatchRequest& DispatchRequest::with_queue_timeout_ms(uint32_t queue_timeout_ms) & {
  queue_timeout_ms_ = queue_timeout_ms;
  return *this;
}
DISPATCH_RVALUE_BUILDER(with_queue_timeout_ms, uint32_t queue_timeout_ms, queue_timeout_ms)

DispatchRequest& DispatchRequest::with_tenant(std::string tenant) & {
  tenant_ = std::move(tenant);
  return *this;
}
DISPATCH_RVALUE_BUILDER(with_tenant, std::string tenant, std::move(tenant))

DispatchRequest& DispatchRequest::with_traceparent(std::string traceparent) & {
  traceparent_ = std::move(traceparent);
  return *this;
}
DISPATCH_RVALUE_BUILDER(with_traceparent, std::string traceparent, std::move(traceparent))

#undef DISPATCH_RVALUE_BUILDER

}  // namespace dispatch
