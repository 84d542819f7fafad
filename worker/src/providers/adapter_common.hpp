#pragma once

// Pieces every adapter shares: request-building helpers (images, tools, keys, temperature) and
// the decoder skeleton that handles status, bounded buffering and error classification, so
// each format only writes its own JSON mapping.

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dispatch/common/clock.hpp"
#include "dispatch/common/result.hpp"
#include "dispatch/protocol/types.hpp"
#include "dispatch/worker/config.hpp"
#include "dispatch/worker/failure.hpp"
#include "dispatch/worker/providers/adapter.hpp"
#include "dispatch/worker/providers/error_classifier.hpp"
#include "json_view.hpp"
#include "json_writer.hpp"

namespace dispatch::worker::detail {

using Json = nlohmann::json;

// Error bodies only need their message; a provider (or a proxy in front of it) may send
// megabytes of HTML.
inline constexpr std::size_t kMaxErrorBodyBytes = 64u << 10;

Failure invalid_request(std::string message);

// Fails with authentication "no API key: set ENV" when the provider has no key and needs one:
// `required` (the format always sends one, see AdapterDescriptor::key_required), or its config
// names a variable.
Result<void, Failure> check_key(const ProviderConfig& provider, bool required);

// base "https://x/v1/" + "/chat/completions" -> "https://x/v1/chat/completions"
std::string join_url(std::string_view base, std::string_view path);

// Sets `name: value`, replacing a header of the same name.
void set_header(HttpHeaders& headers, std::string name, std::string value);
// Configured extra headers win over the adapter's own.
void apply_extra_headers(HttpHeaders& headers, const ProviderConfig& provider);

// A POST of a JSON body: Content-Type and Accept, then the format's own headers (its key, its
// version), then the configured extra headers, which win.
HttpRequest json_post(std::string url, std::string_view accept, HttpHeaders format_headers,
                      const ProviderConfig& provider, std::string body);

struct Image {
  std::string_view url;         // an http(s) URL given as is (formats that accept URLs)
  std::string_view media_type;  // sniffed from the bytes: image/png|jpeg|gif|webp
  std::string_view base64;      // without any data: prefix
};
// Accepts raw base64, a data: URL or an http(s) URL. `where` names the image in messages. The
// views point into `image`.
Result<Image, Failure> parse_image(std::string_view image, std::string_view where);
// From the decoded magic bytes; nullopt for anything else.
std::optional<std::string_view> sniff_image_media_type(std::string_view base64);

// JSON text that must be an object (a tool's schema, a call's arguments), checked without
// building a DOM and returned trimmed, to be written as is; empty text is "{}" when
// `empty_is_object`.
Result<std::string_view, Failure> json_object_text(std::string_view text, std::string_view where,
                                                   bool empty_is_object = true);
// A tool's JSON Schema (empty means an object without properties).
Result<std::string_view, Failure> tool_parameters(const protocol::Tool& tool, std::size_t index);

// Each tool has a name and a valid schema; fails naming the first that has not.
Result<void, Failure> check_tools(const protocol::Request& request);
// OpenAI's shape, which Ollama and DashScope reuse, as the member `tools`:
// [{"type":"function","function":{"name","description","parameters"}}]. Writes nothing when
// the request has no tools; checks them as check_tools does.
Result<void, Failure> write_openai_style_tools(JsonWriter& out, const protocol::Request& request);

// request.tool_choice checked: "" | auto | none | required | function (with a function name).
Result<void, Failure> check_tool_choice(const protocol::Request& request);
// As the member `tool_choice`: "auto" | "none" | "required" | {"type":"function","function":
// {"name"}}; nothing when unset. Call check_tool_choice first.
void write_openai_style_tool_choice(JsonWriter& out, const protocol::Request& request);

// "" | text | json_object | json_schema; anything else fails naming the value.
Result<void, Failure> check_response_format(const protocol::Request& request);

std::optional<double> effective_temperature(const protocol::Request& request,
                                            const ProviderConfig& provider);
// Clamps to [low, high] and notes it, e.g. "temperature 1.5 clamped to 1.0 (anthropic range 0–1)".
double clamp_temperature(double value, double low, double high, std::string_view range_text,
                         std::vector<std::string>& notes);
// 1.5 -> "1.5", 1 -> "1.0": how notes print a temperature.
std::string format_number(double value);

// The failure every format reports for an unknown role.
Failure unknown_role(std::size_t index, std::string_view role);
// "messages[i]: images are only supported in user messages", when a non-user message has them.
Result<void, Failure> check_images_only_in_user(const protocol::Message& message,
                                                std::size_t index);

// end_turn/stop_sequence -> stop, max_tokens/model_context_window_exceeded -> length,
// tool_use/function_call -> tool_calls, refusal -> content_filter; anything else -> stop.
std::string_view normalise_finish_reason(std::string_view raw);

// nlohmann's parse without exceptions (discarded on error), which also refuses a text nested
// deeper than kMaxJsonDepth (dispatch/common/json_depth.hpp): every DOM the worker builds from
// outside text comes from here, so dump() and the readers never recurse past that depth.
Json parse_json(std::string_view text);

// Serialises without throwing on invalid UTF-8 from clients (replaced by U+FFFD).
std::string dump(const Json& value);

// Readers that never throw: a missing key or a value of another type reads as absent.
std::string_view json_string(const Json& object, std::string_view key);
std::optional<uint64_t> json_uint(const Json& object, std::string_view key);
const Json* json_object(const Json& object, std::string_view key);
const Json* json_array(const Json& object, std::string_view key);
// True when the member is the boolean true.
bool json_true(const Json& object, std::string_view key);
// A string member as is, any other present member serialised; nullopt when absent.
std::optional<std::string> json_text_or_dump(const Json& object, std::string_view key);

// The same readers over a stream event's JsonDocument, with the same answers.
std::string dump(const JsonValue& value);
std::string_view json_string(const JsonValue& object, std::string_view key);
std::optional<uint64_t> json_uint(const JsonValue& object, std::string_view key);
const JsonValue* json_object(const JsonValue& object, std::string_view key);
const JsonValue* json_array(const JsonValue& object, std::string_view key);
bool json_true(const JsonValue& object, std::string_view key);
std::optional<std::string> json_text_or_dump(const JsonValue& object, std::string_view key);

// OpenAI's `tool_calls` array of a message (whole answer) or a delta (stream), which
// OpenAI-compatible servers and DashScope share: one ToolCallDelta per element, its `index`
// defaulting to the position when a server leaves it out.
template <class JsonT>
void decode_openai_tool_calls(const JsonT& part, DecodeListener& listener) {
  const JsonT* calls = json_array(part, "tool_calls");
  if (calls == nullptr) return;
  std::size_t position = 0;
  for (const JsonT& call : *calls) {
    protocol::ToolCallDelta delta;
    delta.index = static_cast<uint32_t>(json_uint(call, "index").value_or(position));
    delta.id = json_string(call, "id");
    if (const JsonT* function = json_object(call, "function")) {
      delta.name = json_string(*function, "name");
      delta.arguments = json_string(*function, "arguments");
    }
    listener.on_tool_call(delta);
    ++position;
  }
}

// Unix seconds from RFC 3339 ("2024-05-01T12:00:00.123456789Z", "+02:00" offsets); 0 if bad.
int64_t parse_rfc3339_unix_s(std::string_view text);

// Status handling shared by every format. 2xx streamed bodies go to the format's parser as they
// arrive; a 2xx whole body is buffered (up to the options' bound) and decoded at the end; an
// error body is buffered (64 KiB) and classified at the end through the one classifier.
class DecoderBase : public ResponseDecoder {
 public:
  DecoderBase(const DecoderOptions& options, const ProviderConfig& provider, const Clock& clock)
      : options_(options), provider_(provider), clock_(clock) {}

  void on_headers(int status, const HttpHeaders& headers) final;
  void on_body(std::string_view bytes, DecodeListener& listener) final;
  Result<void, Failure> finish(DecodeListener& listener) final;

 protected:
  // True for SSE formats: a 2xx application/json answer to a stream request (a server that
  // ignored `stream`) is then decoded as a whole body. NDJSON needs no switch: one JSON line
  // with done:true is a valid stream.
  virtual bool switch_to_whole_on_json() const { return true; }
  virtual void feed_stream(std::string_view bytes, DecodeListener& listener) = 0;
  // The body ended cleanly: flush what the parser holds.
  virtual void end_stream(DecodeListener& /*listener*/) {}
  // A whole 2xx body. Fails when the body is itself an error report.
  virtual Result<void, Failure> decode_whole(const Json& body, DecodeListener& listener) = 0;
  // (code, type, message) from this format's error shape; `body` is null when not JSON.
  virtual ProviderError extract_error(const Json* body, std::string_view raw) const = 0;

  Failure classify(const ProviderError& error) const;
  // Reports an error event inside a 200 stream and ignores the rest of the body.
  void fail_stream(DecodeListener& listener, const Failure& failure);
  // Ends the stream as `internal` once the parser had to drop an event larger than its bound
  // (`what`: "event" or "line"); a no-op while `overflowed` is false.
  void fail_if_overflowed(bool overflowed, std::string_view what, DecodeListener& listener);
  void malformed(DecodeListener& listener, std::string_view why);
  bool stopped() const { return stopped_; }
  const ProviderConfig& provider() const { return provider_; }

 private:
  enum class Mode { pending, stream, whole, error };
  void emit_header_metadata(DecodeListener& listener);
  void buffer_whole(std::string_view bytes, DecodeListener& listener);
  Result<void, Failure> finish_whole(DecodeListener& listener);
  Failure finish_error() const;

  DecoderOptions options_;
  const ProviderConfig& provider_;
  const Clock& clock_;
  Mode mode_ = Mode::pending;
  int status_ = 0;
  HttpHeaders headers_;
  std::string buffer_;
  bool header_metadata_sent_ = false;
  bool stopped_ = false;
};

}  // namespace dispatch::worker::detail
