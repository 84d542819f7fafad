#pragma once

// One implementation per provider wire format. A format validates a request as strictly as the
// real API, and renders replies, stream events and errors in that provider's exact shape. It
// does no I/O and knows nothing of directives: the server decides what happens and when.

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "dispatch/fake_provider/errors.hpp"
#include "dispatch/fake_provider/reply.hpp"

namespace dispatch::fake_provider {

enum class Format { openai, anthropic, ollama, dashscope_compatible, dashscope };

// "openai" | "anthropic" | "ollama" | "dashscope-compatible" | "dashscope"
std::string_view format_name(Format format);

// Request headers with case-insensitive lookup.
class Headers {
 public:
  void add(std::string name, std::string value);
  // The first value of `name`, if present.
  std::optional<std::string_view> get(std::string_view name) const;

 private:
  std::vector<std::pair<std::string, std::string>> entries_;  // names lower-cased
};

// Per-request values that ids, timestamps and durations are made from.
struct ResponseContext {
  uint64_t seq = 0;        // attempt number: chatcmpl-<seq>, msg_<seq>, call_<seq>
  std::string request_id;  // request-id header / body field
  std::string model;       // echoed as given, directives included
  int64_t created_unix_s = 0;
  int64_t unix_ns = 0;  // wall time of the reply (Ollama created_at)
  // Nanoseconds since the request arrived, read when a line is rendered (Ollama durations).
  std::function<int64_t()> elapsed_ns;
};

using HeaderList = std::vector<std::pair<std::string, std::string>>;

struct HttpReply {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  HeaderList headers;
};

struct StreamEvent {
  enum class Kind {
    preamble,    // sent with the headers (role chunk, message_start, keep-alive comment)
    structural,  // block boundaries: sent as they come, not counted
    content,     // one token / fragment: counted by cut_after, stall_after, malformed_at ...
    trailer,     // finish chunk, usage chunk, message_delta
    terminator,  // [DONE], message_stop, the done:true line, DashScope's last event
  };
  Kind kind = Kind::content;
  std::string bytes;
  // When set, renders the bytes at send time (durations measured up to that moment).
  std::function<std::string()> render;
};

class WireFormat {
 public:
  virtual ~WireFormat() = default;
  virtual Format format() const = 0;

  // Whether the response will be streamed; `body` may be discarded (invalid JSON).
  virtual bool wants_stream(const nlohmann::json& body, const Headers& headers) const = 0;

  // Credential check. `required_key` empty means any non-empty key is accepted.
  virtual std::optional<FakeError> check_auth(const Headers& headers,
                                              std::string_view required_key) const = 0;

  // Strict validation; `body` is discarded when it was not valid JSON.
  virtual std::variant<ChatRequest, FakeError> parse(const nlohmann::json& body,
                                                     const Headers& headers) const = 0;

  virtual HttpReply error_reply(const FakeError& error, const ResponseContext& context) const = 0;
  virtual HttpReply reply(const ChatRequest& request, const ReplyPlan& plan,
                          const ResponseContext& context) const = 0;

  virtual std::string stream_content_type() const = 0;
  virtual std::vector<StreamEvent> stream(const ChatRequest& request, const ReplyPlan& plan,
                                          const ResponseContext& context) const = 0;
  // `event_number` is the 1-based position among the events written so far (DashScope ids).
  virtual std::string malformed_event(const ResponseContext& context,
                                      size_t event_number) const = 0;
  virtual std::string error_event(const FakeError& error, const ResponseContext& context,
                                  size_t event_number) const = 0;
  // The error a stream-only fault becomes on a non-streamed request (error_mid_stream).
  virtual FakeError mid_stream_error() const = 0;

  // Headers every reply of this format carries (request id).
  virtual HeaderList common_headers(const ResponseContext& context) const = 0;
  // The provider's request id style ("req_..." or a uuid), unique per (instance, seq).
  virtual std::string request_id(uint64_t instance, uint64_t seq) const = 0;
};

const WireFormat& wire_format(Format format);

// Model listings: GET /v1/models (OpenAI or, with x-api-key, Anthropic), GET /api/tags,
// GET /compatible-mode/v1/models.
std::string openai_models_body(int64_t created_unix_s);
std::string anthropic_models_body();
std::string ollama_tags_body(int64_t unix_ns);

}  // namespace dispatch::fake_provider
