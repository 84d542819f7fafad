#pragma once

// One adapter per wire format (ollama, openai, openai-compatible, dashscope, anthropic) behind
// this narrow interface. An adapter only translates: unified Request -> HttpRequest, and the
// provider's bytes -> unified events. It holds no retry, timeout or fallback logic.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "dispatch/common/clock.hpp"
#include "dispatch/protocol/types.hpp"
#include "dispatch/worker/failure.hpp"
#include "dispatch/worker/http.hpp"

namespace dispatch::worker {

struct ProviderConfig;  // config.hpp

// Receives what a provider said, in unified form, as it is decoded.
class DecodeSink {
 public:
  virtual ~DecodeSink() = default;
  virtual void on_content(std::string_view text) = 0;
  virtual void on_thinking(std::string_view text) = 0;
  virtual void on_tool_call(const protocol::ToolCallDelta& delta) = 0;  // assembled by index
  // Cumulative counts; the last call wins. total = prompt + completion is derived by the caller.
  virtual void on_usage(uint64_t prompt_tokens, uint64_t completion_tokens) = 0;
  virtual void on_finish(std::string_view normalised, std::string_view raw) = 0;
  virtual void on_metadata(std::string_view request_id, std::string_view model,
                           int64_t created_at_unix_s) = 0;
  // The stream's explicit end marker arrived ([DONE], message_stop, done:true, DashScope's
  // final event). A stream that ends without it is incomplete.
  virtual void on_terminator() = 0;
  // One event could not be parsed and was skipped.
  virtual void on_malformed_event(std::string_view why) = 0;
  // The provider reported an error inside a 200 stream. The attempt fails with it.
  virtual void on_stream_error(const Failure& failure) = 0;
};

// Decodes one attempt's response. Fed on the loop thread as bytes arrive.
class ResponseDecoder {
 public:
  virtual ~ResponseDecoder() = default;
  // Status line and headers are complete. When the status is an error the body is buffered
  // (bounded) and classified in finish().
  virtual void on_headers(int status, const HttpHeaders& headers) = 0;
  virtual void on_body(std::string_view bytes, DecodeSink& sink) = 0;
  // The transfer ended cleanly at the HTTP level. Emits any remaining events (a non-streamed
  // body is decoded here) and returns the failure if the response was an error, or nothing.
  virtual std::optional<Failure> finish(DecodeSink& sink) = 0;
};

struct BuiltRequest {
  HttpRequest http;
  std::vector<std::string> notes;  // adjustments the user should see, e.g. a clamped temperature
};

class Adapter {
 public:
  virtual ~Adapter() = default;
  virtual std::string_view type() const = 0;  // "openai", "anthropic", ...
  // Translates the whole unified request for `model` on `provider`. `stream` decides the
  // response form. Fails with invalid_request for a request the format cannot express, or
  // authentication when the provider needs a key and has none.
  virtual std::variant<BuiltRequest, Failure> build(const protocol::Request& request,
                                                    const std::string& model, bool stream,
                                                    const ProviderConfig& provider) const = 0;
  // `provider` (its key is scrubbed from error messages) and `clock` (Retry-After HTTP dates)
  // must outlive the decoder.
  virtual std::unique_ptr<ResponseDecoder> make_decoder(bool stream, const ProviderConfig& provider,
                                                        const Clock& clock) const = 0;
};

using AdapterPtr = std::unique_ptr<Adapter>;

// Looks an adapter up by config `type`; nullptr for an unknown type.
const Adapter* adapter_for_type(std::string_view type);

}  // namespace dispatch::worker
