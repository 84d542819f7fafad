#pragma once

// One adapter per wire format (ollama, openai, openai-compatible, dashscope, anthropic) behind
// this narrow interface. An adapter only translates: unified Request -> HttpRequest, and the
// provider's bytes -> unified events. It holds no retry, timeout or fallback logic.
//
// Each adapter also describes itself (AdapterDescriptor: its config `type`, where its base URL
// and key come from, the built-in provider it serves) and is listed once in the registry
// (builtin_adapters.cpp); configuration and the launcher find it there by `type`. README.md
// "Adding a provider" is the recipe.

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "dispatch/common/clock.hpp"
#include "dispatch/common/result.hpp"
#include "dispatch/protocol/types.hpp"
#include "dispatch/worker/failure.hpp"
#include "dispatch/worker/http.hpp"

namespace dispatch::worker {

struct ProviderConfig;  // config.hpp

// Receives what a provider said, in unified form, as it is decoded.
class DecodeListener {
 public:
  virtual ~DecodeListener() = default;
  virtual void on_content(std::string_view text) = 0;
  virtual void on_thinking(std::string_view text) = 0;
  virtual void on_tool_call(const protocol::ToolCallDelta& delta) = 0;  // assembled by index
  // Cumulative counts; the last call wins. total = prompt + completion is derived by the caller.
  virtual void on_usage(uint64_t prompt_tokens, uint64_t completion_tokens) = 0;
  // Of the prompt tokens, those read from the provider's prompt cache (cumulative, the last
  // call wins), for the formats that report them.
  virtual void on_cached_tokens(uint64_t /*cached_tokens*/) {}
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
  virtual void on_body(std::string_view bytes, DecodeListener& listener) = 0;
  // The transfer ended cleanly at the HTTP level. Emits any remaining events (a non-streamed
  // body is decoded here); fails when the response was an error.
  virtual Result<void, Failure> finish(DecodeListener& listener) = 0;
};

struct DecoderOptions {
  bool stream = true;  // the request asked for a stream
  // A whole (non-streamed) body larger than this fails the attempt as invalid_request,
  // response_too_large: worker.max_response_bytes.
  std::size_t max_body_bytes = 8u << 20;
};

struct BuiltRequest {
  HttpRequest http;
  std::vector<std::string> notes;  // adjustments the user should see, e.g. a clamped temperature
};

// What configuration needs to know about a wire format, stated by its adapter.
struct AdapterDescriptor {
  std::string_view type;              // the config's `type`: "openai", "anthropic", ...
  std::string_view default_base_url;  // "" = the config must give base_url
  // Variables that override the default base URL, first set wins (the official SDK's own
  // variable first, aliases after).
  std::span<const std::string_view> base_url_env;
  std::string_view api_key_env;  // the default variable of the key; "" = none
  // The format always sends a key: without one every attempt fails with authentication. When
  // false a key is sent only if the config's api_key_env names one.
  bool key_required = false;
  // The provider name served without any config (when its key is set, or needs none), e.g.
  // "claude" for anthropic; "" = none. Requests name providers, configs name types.
  std::string_view builtin_name;
  std::string_view default_model;  // what the built-in provider is usually asked for (docs, logs)
  // Turns the value of a base_url_env variable into a URL (OLLAMA_HOST carries no scheme);
  // null = the value is the URL.
  std::string (*base_url_from_env)(std::string_view value) = nullptr;
};

class Adapter {
 public:
  virtual ~Adapter() = default;
  virtual const AdapterDescriptor& descriptor() const = 0;
  std::string_view type() const { return descriptor().type; }
  // Translates the whole unified request for `model` on `provider`. `stream` decides the
  // response form. Fails with invalid_request for a request the format cannot express, or
  // authentication when the provider needs a key and has none.
  virtual Result<BuiltRequest, Failure> build(const protocol::Request& request,
                                              const std::string& model, bool stream,
                                              const ProviderConfig& provider) const = 0;
  // `provider` (its key is scrubbed from error messages) and `clock` (Retry-After HTTP dates)
  // must outlive the decoder.
  virtual std::unique_ptr<ResponseDecoder> make_decoder(const DecoderOptions& options,
                                                        const ProviderConfig& provider,
                                                        const Clock& clock) const = 0;
};

using AdapterPtr = std::unique_ptr<Adapter>;

// The wire formats this process knows, by `type`.
class AdapterRegistry {
 public:
  // Throws std::logic_error when the type or the built-in provider name is taken already: two
  // adapters claiming one name is a bug to find at start-up, not a silent override.
  void add(AdapterPtr adapter);
  // nullptr when no adapter has that type / serves that built-in provider name.
  const Adapter* find(std::string_view type) const;
  const Adapter* find_builtin(std::string_view provider_name) const;
  // In registration order.
  const std::vector<AdapterPtr>& adapters() const { return adapters_; }
  std::vector<std::string_view> types() const;
  std::vector<std::string_view> builtin_names() const;

 private:
  std::vector<AdapterPtr> adapters_;
};

// Adds the built-in adapters (builtin_adapters.cpp: the one list of them).
void register_builtin_adapters(AdapterRegistry& registry);

// The process's registry, with the built-in adapters registered on first use. Add further
// adapters before any thread reads it (at start-up, or at the top of a test).
AdapterRegistry& adapter_registry();

// adapter_registry().find(type).
const Adapter* adapter_for_type(std::string_view type);

// An upper bound of the bytes of the request body any adapter builds for `request` (and any
// model name up to 256 bytes beyond those the request names), found without allocating:
// exact escaped lengths of the text, generous constants for the JSON around it. A request over
// `worker.max_request_bytes` by this measure is refused before any body is built.
std::size_t estimate_request_body_bytes(const protocol::Request& request) noexcept;

// Heap bytes a decoded Request holds (its strings beyond the small-string buffer, its vectors'
// storage, the map of metadata), without allocating.
std::size_t decoded_request_bytes(const protocol::Request& request) noexcept;

// All a worker holds for one job - its payload (the msgpack Request), the decoded request and
// the provider body - may be at most this multiple of the payload, plus kJobAllowanceBytes so
// that small requests always pass. Issue 11's bound: a hostile request must not turn a few MiB
// into GiB. Ordinary chats hold 3-5x; only requests of many tiny elements (100,000 empty tool
// calls, thousands of one-word messages) or of text that JSON escapes six-fold reach it.
inline constexpr std::size_t kMaxJobMemoryMultiple = 10;
inline constexpr std::size_t kJobAllowanceBytes = 64u << 10;

// Refuses, before any body is built, a request whose body (estimate_request_body_bytes) would
// be larger than `max_request_bytes`, or would take the job past kMaxJobMemoryMultiple x
// `payload_bytes` + kJobAllowanceBytes: invalid_request with code request_too_large.
// Allocates nothing when the request passes.
Result<void, Failure> check_request_body_size(const protocol::Request& request,
                                              std::size_t payload_bytes,
                                              std::size_t max_request_bytes);

}  // namespace dispatch::worker
