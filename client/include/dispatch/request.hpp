#pragma once

// The request a user builds: provider, model, messages and the optional knobs of the seed
// guide, with a fluent builder. It converts to the wire form (protocol::Request) that the
// broker routes and the worker executes.

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "dispatch/protocol/types.hpp"

namespace dispatch {

using protocol::Priority;
using protocol::Target;
using protocol::ToolCall;

// The four providers the seed guide names. Any other configured provider is addressed by its
// name string (DispatchRequest has a constructor taking one). The capitalised spellings of
// earlier releases still compile, with a deprecation warning, and mean the same values.
enum class Provider {
  ollama,
  ali,
  openai,
  claude,
  Ollama [[deprecated("use Provider::ollama")]] = ollama,
  Ali [[deprecated("use Provider::ali")]] = ali,
  OpenAI [[deprecated("use Provider::openai")]] = openai,
  Claude [[deprecated("use Provider::claude")]] = claude,
};

// "ollama", "ali", "openai", "claude" — the names worker configs use for the built-ins.
std::string_view provider_name(Provider provider) noexcept;

// A target given as text was not "provider/model".
class InvalidTargetError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// Splits "provider/model" on the FIRST '/', so model names may themselves contain '/'
// ("openai-compatible/meta-llama/Llama-3-8B"). Throws InvalidTargetError when there is no '/',
// or when the provider or the model is empty.
Target parse_target(std::string_view text);

// Like parse_target, but an empty text, a bare provider ("openai") or an empty model
// ("openai/") yields nullopt: the CLI's way of saying "no fallback". Still throws on "/m".
std::optional<Target> parse_optional_target(std::string_view text);

// "priority" names as the CLI and batch files spell them.
std::optional<Priority> priority_from_string(std::string_view name) noexcept;
std::string_view to_string(Priority priority) noexcept;

// One chat message. A plain protocol::Message with named constructors and builders, so
// `Message::user("Describe this").with_image(base64_png)` reads like the guide.
struct Message : protocol::Message {
  Message() = default;
  Message(std::string role_name, std::string text);
  explicit Message(protocol::Message message) : protocol::Message(std::move(message)) {}

  static Message system(std::string text) { return {"system", std::move(text)}; }
  static Message user(std::string text) { return {"user", std::move(text)}; }
  static Message assistant(std::string text) { return {"assistant", std::move(text)}; }
  // The answer to a tool call: `call_id` is the id the model gave the call; `name` the function.
  static Message tool(std::string call_id, std::string name, std::string result_text);

  // base64 image data (a data: URL is accepted; the worker strips its prefix).
  Message& with_image(std::string base64) &;
  Message&& with_image(std::string base64) &&;
  Message& with_images(std::vector<std::string> base64_images) &;
  Message&& with_images(std::vector<std::string> base64_images) &&;
  Message& with_tool_calls(std::vector<ToolCall> calls) &;
  Message&& with_tool_calls(std::vector<ToolCall> calls) &&;
  Message& with_thinking(std::string text) &;
  Message&& with_thinking(std::string text) &&;
};

// A function the model may call. `parameters_json` is a JSON Schema object as text.
struct Tool : protocol::Tool {
  Tool() = default;
  Tool(std::string function_name, std::string function_description, std::string parameters_json)
      : protocol::Tool{std::move(function_name), std::move(function_description),
                       std::move(parameters_json)} {}
};

// How the model may use tools: auto (default), none, required, or one named function.
struct ToolChoice {
  std::string mode;      // "auto" | "none" | "required" | "function"
  std::string function;  // for mode "function"

  static ToolChoice automatic() { return {"auto", {}}; }
  static ToolChoice none() { return {"none", {}}; }
  static ToolChoice required() { return {"required", {}}; }
  static ToolChoice function_named(std::string name) { return {"function", std::move(name)}; }
};

// Builders come in pairs: on an lvalue they modify it and return it; on a temporary they
// return it by rvalue reference, so `auto r = DispatchRequest(...).with_temperature(0.2);`
// moves instead of copying.
class DispatchRequest {
 public:
  DispatchRequest(Provider provider, std::string model, std::vector<Message> messages);
  // Any provider name a worker config defines (e.g. "deepseek" for an openai-compatible entry).
  DispatchRequest(std::string provider, std::string model, std::vector<Message> messages);
  // Wraps a wire request as is (used by the CLI's batch reader).
  explicit DispatchRequest(protocol::Request request);
  DispatchRequest& with_temperature(double temperature) &;
  DispatchRequest&& with_temperature(double temperature) &&;
  DispatchRequest& with_max_tokens(uint32_t max_tokens) &;
  DispatchRequest&& with_max_tokens(uint32_t max_tokens) &&;
  DispatchRequest& with_top_p(double top_p) &;
  DispatchRequest&& with_top_p(double top_p) &&;
  DispatchRequest& with_stop(std::vector<std::string> stop) &;
  DispatchRequest&& with_stop(std::vector<std::string> stop) &&;
  DispatchRequest& with_stream(bool stream) &;
  DispatchRequest&& with_stream(bool stream) &&;
  // Total deadline of the job at the worker, covering all retries and fallbacks
  // (worker default 30000).
  DispatchRequest& with_timeout_ms(uint32_t timeout_ms) &;
  DispatchRequest&& with_timeout_ms(uint32_t timeout_ms) &&;
  DispatchRequest& with_timeout(std::chrono::milliseconds timeout) &;
  DispatchRequest&& with_timeout(std::chrono::milliseconds timeout) &&;
  // Retries per target for retryable failures (worker default 3).
  DispatchRequest& with_retry_count(uint32_t retry_count) &;
  DispatchRequest&& with_retry_count(uint32_t retry_count) &&;
  // The ordered fallback chain. An empty list means "no fallback at all"; never calling
  // a fallback builder leaves the choice to the worker's configured default chain.
  DispatchRequest& with_fallbacks(std::vector<Target> targets) &;
  DispatchRequest&& with_fallbacks(std::vector<Target> targets) &&;
  // Each text is "provider/model", split on the first '/'. Throws InvalidTargetError.
  DispatchRequest& with_fallbacks(const std::vector<std::string>& targets) &;
  DispatchRequest&& with_fallbacks(const std::vector<std::string>& targets) &&;
  // `.with_fallbacks({"openai/gpt-4o-mini", "claude/claude-3-5-haiku-latest"})`
  DispatchRequest& with_fallbacks(std::initializer_list<std::string_view> targets) &;
  DispatchRequest&& with_fallbacks(std::initializer_list<std::string_view> targets) &&;
  // Appends one target to the chain.
  DispatchRequest& with_fallback(Target target) &;
  DispatchRequest&& with_fallback(Target target) &&;
  DispatchRequest& with_fallback(Provider provider, std::string model) &;
  DispatchRequest&& with_fallback(Provider provider, std::string model) &&;
  DispatchRequest& with_no_fallback() &;
  DispatchRequest&& with_no_fallback() &&;
  DispatchRequest& with_tools(std::vector<Tool> tools) &;
  DispatchRequest&& with_tools(std::vector<Tool> tools) &&;
  DispatchRequest& with_tool_choice(ToolChoice choice) &;
  DispatchRequest&& with_tool_choice(ToolChoice choice) &&;
  // "text" | "json_object" | "json_schema" (then with_json_schema gives the schema).
  DispatchRequest& with_response_format(std::string format) &;
  DispatchRequest&& with_response_format(std::string format) &&;
  DispatchRequest& with_json_schema(std::string schema_json) &;
  DispatchRequest&& with_json_schema(std::string schema_json) &&;
  // interactive (default) is served before normal, normal before batch.
  DispatchRequest& with_priority(Priority priority) &;
  DispatchRequest&& with_priority(Priority priority) &&;
  // Opaque key/value pairs carried with the job (e.g. a batch custom_id).
  DispatchRequest& with_metadata(std::string key, std::string value) &;
  DispatchRequest&& with_metadata(std::string key, std::string value) &&;
  // Ask for the model's reasoning output, where the provider supports it.
  DispatchRequest& with_thinking(bool enabled) &;
  DispatchRequest&& with_thinking(bool enabled) &&;
  DispatchRequest& with_thinking_budget(uint32_t budget_tokens) &;
  DispatchRequest&& with_thinking_budget(uint32_t budget_tokens) &&;
  // How long the job may wait in the broker's queue for a worker; 0 = broker default.
  DispatchRequest& with_queue_timeout_ms(uint32_t queue_timeout_ms) &;
  DispatchRequest&& with_queue_timeout_ms(uint32_t queue_timeout_ms) &&;
  // The tenant this job is submitted for (Submit.tenant, 1..128 bytes; "" = none, the
  // default). Meant for gateways serving many API keys over one connection: the broker then
  // applies job-id ownership, fairness and per-client bounds per (identity, tenant). Only an
  // identity the broker lists in --allow-gateways may set it (anyone without CURVE); the
  // broker refuses a longer one, or one from any other identity, with invalid_request.
  DispatchRequest& with_tenant(std::string tenant) &;
  DispatchRequest&& with_tenant(std::string tenant) &&;
  // The W3C trace context the job belongs to (Submit.traceparent,
  // "00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>"): the worker sends it on to the
  // provider (with its own span as the parent) and the broker's and the worker's log lines of
  // the job carry its trace id. "" (the default): the broker starts a fresh trace. The broker
  // ignores an invalid one (as the spec asks) and starts a fresh trace; check it first with
  // dispatch::parse_traceparent (dispatch/common/trace.hpp) to refuse it instead.
  DispatchRequest& with_traceparent(std::string traceparent) &;
  DispatchRequest&& with_traceparent(std::string traceparent) &&;

  const protocol::Request& wire() const noexcept { return request_; }
  protocol::Request& wire() noexcept { return request_; }
  Priority priority() const noexcept { return priority_; }
  uint32_t queue_timeout_ms() const noexcept { return queue_timeout_ms_; }
  const std::string& tenant() const noexcept { return tenant_; }
  const std::string& traceparent() const noexcept { return traceparent_; }
  const std::string& provider() const noexcept { return request_.provider; }
  const std::string& model() const noexcept { return request_.model; }
  bool stream() const noexcept { return request_.stream; }

 private:
  protocol::Request request_;
  Priority priority_ = Priority::interactive;
  uint32_t queue_timeout_ms_ = 0;
  std::string tenant_;
  std::string traceparent_;
};

}  // namespace dispatch
