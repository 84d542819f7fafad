// Fuzz harness: each provider adapter's response decoder, streaming and not, for a success and
// for error statuses — what a provider (or anything answering at its URL) sends back.
//
// Input: byte 0 picks the wire format (bits 0-2), streaming (bit 3) and the HTTP status (bits
// 4-7); byte 1 the size of the pieces the body arrives in; byte 2 whether a retry-after header is
// sent, its value being the body's first line (bits 0-1), and a 256-byte cap on a whole body
// (bit 2). The rest is the body. Besides "no crash, no
// sanitizer report", oracles: the provider's API key never appears in a failure's message or
// code (decoders scrub it from what providers echo), and every failure has a known kind.

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "dispatch/common/clock.hpp"
#include "dispatch/worker/config.hpp"
#include "dispatch/worker/providers/adapter.hpp"

namespace {

using dispatch::protocol::ErrorKind;
using dispatch::protocol::ToolCallDelta;
using namespace dispatch::worker;

constexpr std::string_view kKey = "sk-fuzz-4f7c2a9e1b";
constexpr const char* kTypes[] = {"openai", "openai-compatible", "anthropic", "ollama",
                                  "dashscope"};
constexpr int kStatuses[] = {200, 200, 200, 200, 200, 200, 200, 200,
                             400, 401, 404, 408, 413, 429, 500, 529};

void check_failure(const Failure& failure) {
  if (failure.message.find(kKey) != std::string::npos ||
      failure.code.find(kKey) != std::string::npos) {
    std::fprintf(stderr, "the API key leaked into a failure: %s\n", failure.message.c_str());
    std::abort();
  }
  if (to_string(failure.kind).empty() || failure.kind == ErrorKind::unknown) {
    std::fprintf(stderr, "failure of unknown kind %d\n", static_cast<int>(failure.kind));
    std::abort();
  }
}

// Touches every byte it is given, so that a view into freed or foreign memory is an ASan report.
class TouchingSink final : public DecodeListener {
 public:
  void on_content(std::string_view text) override { touch(text); }
  void on_thinking(std::string_view text) override { touch(text); }
  void on_tool_call(const ToolCallDelta& delta) override {
    touch(delta.id);
    touch(delta.name);
    touch(delta.arguments);
  }
  void on_usage(uint64_t prompt, uint64_t completion) override { sum_ += prompt + completion; }
  void on_finish(std::string_view normalised, std::string_view raw) override {
    touch(normalised);
    touch(raw);
  }
  void on_metadata(std::string_view request_id, std::string_view model, int64_t) override {
    touch(request_id);
    touch(model);
  }
  void on_terminator() override { ++sum_; }
  void on_malformed_event(std::string_view why) override { touch(why); }
  void on_stream_error(const Failure& failure) override { check_failure(failure); }

 private:
  void touch(std::string_view text) {
    for (char c : text) sum_ += static_cast<unsigned char>(c);
  }
  uint64_t sum_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  if (size < 3) return 0;
  const char* type = kTypes[(data[0] & 7) % std::size(kTypes)];
  const bool stream = (data[0] & 8) != 0;
  const int status = kStatuses[data[0] >> 4];
  const std::size_t piece = static_cast<std::size_t>(data[1]) + 1;
  std::string_view body(reinterpret_cast<const char*>(data) + 3, size - 3);

  HttpHeaders headers{{"content-type", stream ? "text/event-stream" : "application/json"}};
  if (data[2] & 1) {
    const auto newline = body.find('\n');
    headers.push_back(
        {data[2] & 2 ? "retry-after-ms" : "retry-after", std::string(body.substr(0, newline))});
  }

  const Adapter* adapter = adapter_for_type(type);
  if (adapter == nullptr) std::abort();
  ProviderConfig provider;
  provider.name = "fuzz";
  provider.type = type;
  provider.base_url = "http://127.0.0.1:9";
  provider.api_key_env = "FUZZ_KEY";
  provider.api_key = std::string(kKey);
  dispatch::ManualClock clock;
  DecoderOptions options;
  options.stream = stream;
  // Sometimes a small cap, so that the response_too_large path is fuzzed too.
  if (data[2] & 4) options.max_body_bytes = 256;
  std::unique_ptr<ResponseDecoder> decoder = adapter->make_decoder(options, provider, clock);
  TouchingSink sink;
  decoder->on_headers(status, headers);
  for (std::size_t at = 0; at < body.size(); at += piece) {
    decoder->on_body(body.substr(at, piece), sink);
  }
  if (const auto finished = decoder->finish(sink); !finished) check_failure(finished.error());
  return 0;
}
