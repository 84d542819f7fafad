#pragma once

// The unified request / response / error of LLM Dispatcher, shared by broker, worker and client.
// Field names and meaning are specified in schemas/PROTOCOL.md; this header is their C++ form.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace dispatch::protocol {

// One taxonomy for every failure a user can see. Encoded on the wire by name (to_string);
// a name this build does not know decodes to `unknown` so newer peers stay readable.
enum class ErrorKind : uint8_t {
  unknown = 0,
  unsupported_provider,     // no worker serves the provider (after the queue deadline)
  model_not_available,      // provider answered 404 / unknown model
  invalid_request,          // 400/422, malformed request, bad protocol input
  authentication,           // 401/403, missing key
  rate_limited,             // 429
  overloaded,               // 503, 529, Anthropic overloaded_error
  server_error,             // other 5xx
  timeout,                  // connect, first token, idle gap, total or queue deadline
  network,                  // connection refused/reset, DNS, TLS, cut stream at transport level
  context_length_exceeded,  // prompt too long for the model
  content_filtered,         // provider's content policy refused
  stream_interrupted,       // stream ended without its terminator / error event mid-stream
  queue_full,               // broker queue bound, per-client bound, draining
  cancelled,                // client cancel
  internal,                 // a bug or an invariant of ours; redelivery limit reached
};

std::string_view to_string(ErrorKind kind) noexcept;
ErrorKind error_kind_from_string(std::string_view name) noexcept;

// Normalised finish reasons: "stop", "length", "tool_calls", "content_filter" (raw kept beside).
namespace finish {
inline constexpr std::string_view stop = "stop";
inline constexpr std::string_view length = "length";
inline constexpr std::string_view tool_calls = "tool_calls";
inline constexpr std::string_view content_filter = "content_filter";
}  // namespace finish

// Priority classes. Lower value is served first; FIFO and per-client fairness within a class.
enum class Priority : uint8_t { interactive = 0, normal = 1, batch = 2 };
inline constexpr uint8_t kPriorityLevels = 3;

struct ToolCall {
  std::string id;
  std::string name;
  std::string arguments;  // JSON text (an object), as OpenAI carries it

  bool operator==(const ToolCall&) const = default;
};

struct Message {
  std::string role;  // system | user | assistant | tool
  std::string content;
  std::string thinking;              // assistant reasoning text, when a provider returns it
  std::vector<std::string> images;   // base64 (a data: URL prefix is accepted and stripped)
  std::vector<ToolCall> tool_calls;  // assistant messages
  std::string tool_call_id;          // tool messages: the call this result answers
  std::string tool_name;             // tool messages: the function name (Ollama keys on it)

  bool operator==(const Message&) const = default;
};

struct Tool {
  std::string name;
  std::string description;
  std::string parameters;  // JSON Schema text; empty means {"type":"object","properties":{}}

  bool operator==(const Tool&) const = default;
};

struct Target {
  std::string provider;
  std::string model;

  bool operator==(const Target&) const = default;
};

struct Request {
  std::string provider;
  std::string model;
  std::vector<Message> messages;
  bool stream = false;
  std::optional<double> temperature;  // absent: worker config default (0.7 built in)
  std::optional<uint32_t> max_tokens;
  std::optional<double> top_p;
  std::vector<std::string> stop;
  std::optional<uint32_t> timeout_ms;   // total deadline; absent: config (30000)
  std::optional<uint32_t> retry_count;  // retries per target; absent: config (3)
  // Absent: the worker's configured default chain (when fallback is enabled).
  // Present and empty: no fallback at all.
  std::optional<std::vector<Target>> fallbacks;
  std::vector<Tool> tools;
  std::string tool_choice;                  // "" | auto | none | required | function
  std::string tool_choice_function;         // the function's name when tool_choice == "function"
  std::string response_format;              // "" | text | json_object | json_schema
  std::string response_schema;              // JSON Schema text for json_schema
  std::optional<bool> think;                // ask for reasoning / thinking output
  std::optional<uint32_t> thinking_budget;  // tokens, where the provider takes a budget
  std::map<std::string, std::string> metadata;  // opaque to us, echoed nowhere provider-side

  bool operator==(const Request&) const = default;
};

struct Usage {
  uint64_t prompt_tokens = 0;
  uint64_t completion_tokens = 0;
  uint64_t total_tokens = 0;  // always prompt + completion
  // Of prompt_tokens, those the provider read from its prompt cache (billed at its cached-input
  // price), where the provider reports them; 0 otherwise.
  uint64_t cached_tokens = 0;

  bool operator==(const Usage&) const = default;
};

// One try of one target. `outcome` is "ok" or an ErrorKind name, or "circuit_open" when the
// breaker skipped the target without a call, or "unsupported_provider" when this worker has
// no such provider configured.
struct Attempt {
  std::string provider;
  std::string model;
  std::string outcome;
  uint16_t status = 0;           // provider HTTP status, 0 when none
  std::string code;              // provider error code/type, when there was one
  std::string message;           // short reason (never contains a key)
  uint64_t start_offset_ms = 0;  // since the worker took the job
  uint64_t duration_ms = 0;
  std::string note;  // e.g. "temperature clamped to 1.0", "retry-after 2000 ms honoured"

  bool operator==(const Attempt&) const = default;
};

struct Response {
  std::string content;
  std::string thinking;
  std::vector<ToolCall> tool_calls;
  std::string provider;  // the target that actually answered
  std::string model;
  Usage usage;                     // of the answering attempt only
  std::string finish_reason;       // normalised
  std::string raw_finish_reason;   // as the provider said it
  std::string request_id;          // the provider's request / response id
  int64_t created_at = 0;          // Unix seconds
  uint64_t total_duration_ns = 0;  // worker took the job -> answer complete
  std::vector<Attempt> attempts;
  uint32_t skipped_events = 0;  // malformed stream events skipped in the answering attempt
  // What the answering attempt cost in US dollars (usage x the worker's price table),
  // unrounded; absent when the table has no price for the provider type and model.
  std::optional<double> cost_usd{};

  bool operator==(const Response&) const = default;
};

struct Error {
  ErrorKind kind = ErrorKind::internal;
  std::string message;
  uint16_t status = 0;  // provider HTTP status of the decisive attempt, 0 when none
  std::string code;     // provider error code, or ours (e.g. "queue_deadline")
  std::string provider;
  std::string model;
  std::vector<Attempt> attempts;

  bool operator==(const Error&) const = default;
};

// Incremental piece of a streamed answer.
struct ToolCallDelta {
  uint32_t index = 0;
  std::string id;         // first delta of a call
  std::string name;       // first delta of a call
  std::string arguments;  // a fragment, to concatenate per index

  bool operator==(const ToolCallDelta&) const = default;
};

struct Chunk {
  std::string job_id;
  uint64_t seq = 0;  // per job; after a reset continues from the reset's next_seq
  std::string content;
  std::string thinking;
  std::vector<ToolCallDelta> tool_calls;

  bool operator==(const Chunk&) const = default;
};

// The answer so far is void; what follows restarts it from scratch.
struct StreamReset {
  std::string job_id;
  uint64_t next_seq = 0;
  std::string reason;  // e.g. "fallback to claude/claude-3-5-haiku: stream_interrupted"

  bool operator==(const StreamReset&) const = default;
};

}  // namespace dispatch::protocol
