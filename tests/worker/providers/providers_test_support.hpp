#pragma once

// Helpers for the provider-layer tests: an injectable environment, a DecodeListener that records
// everything, and a driver that feeds a canned response to a decoder in arbitrary pieces.

#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "dispatch/common/clock.hpp"
#include "dispatch/worker/config.hpp"
#include "dispatch/worker/providers/adapter.hpp"

namespace dispatch::worker::test {

using Json = nlohmann::json;

class MapEnvironment final : public Environment {
 public:
  MapEnvironment() = default;
  MapEnvironment(std::initializer_list<std::pair<const std::string, std::string>> values)
      : values_(values) {}
  std::optional<std::string> get(const std::string& name) const override {
    auto it = values_.find(name);
    if (it == values_.end()) return std::nullopt;
    return it->second;
  }
  void set(const std::string& name, const std::string& value) { values_[name] = value; }

 private:
  std::map<std::string, std::string> values_;
};

// Everything a decoder said, in the unified shape the launcher accumulates.
struct Decoded {
  std::string content;
  std::string thinking;
  std::map<uint32_t, protocol::ToolCall> tool_calls;  // assembled by index
  uint64_t prompt_tokens = 0;
  uint64_t completion_tokens = 0;
  uint64_t cached_tokens = 0;
  int usage_calls = 0;
  std::string finish;
  std::string raw_finish;
  std::string request_id;
  std::string model;
  int64_t created_at = 0;
  int terminators = 0;
  int malformed = 0;
  std::optional<Failure> stream_error;
  std::optional<Failure> finish_failure;  // what finish() returned
};

class RecordingListener final : public DecodeListener {
 public:
  Decoded decoded;

  void on_content(std::string_view text) override { decoded.content.append(text); }
  void on_thinking(std::string_view text) override { decoded.thinking.append(text); }
  void on_tool_call(const protocol::ToolCallDelta& delta) override {
    protocol::ToolCall& call = decoded.tool_calls[delta.index];
    if (call.id.empty()) call.id = delta.id;
    if (!delta.name.empty() && delta.name != call.name) call.name += delta.name;
    call.arguments += delta.arguments;
  }
  void on_usage(uint64_t prompt, uint64_t completion) override {
    decoded.prompt_tokens = prompt;
    decoded.completion_tokens = completion;
    ++decoded.usage_calls;
  }
  void on_cached_tokens(uint64_t cached) override { decoded.cached_tokens = cached; }
  void on_finish(std::string_view normalised, std::string_view raw) override {
    decoded.finish = normalised;
    decoded.raw_finish = raw;
  }
  void on_metadata(std::string_view request_id, std::string_view model, int64_t created) override {
    if (!request_id.empty()) decoded.request_id = request_id;
    if (!model.empty()) decoded.model = model;
    if (created != 0) decoded.created_at = created;
  }
  void on_terminator() override { ++decoded.terminators; }
  void on_malformed_event(std::string_view) override { ++decoded.malformed; }
  void on_stream_error(const Failure& failure) override {
    if (!decoded.stream_error) decoded.stream_error = failure;
  }
};

inline ProviderConfig make_provider(std::string type, std::string key = "sk-test-key-123456") {
  ProviderConfig provider;
  provider.name = type;
  provider.type = std::move(type);
  provider.base_url = "http://127.0.0.1:1/base";
  provider.api_key = std::move(key);
  provider.api_key_env = "TEST_KEY";
  return provider;
}

inline void record_finish(ResponseDecoder& decoder, RecordingListener& listener) {
  auto finished = decoder.finish(listener);
  if (!finished) listener.decoded.finish_failure = finished.error();
}

// Decodes `body` fed in pieces of `piece` bytes (0 = all at once).
inline Decoded decode(const Adapter& adapter, bool stream, int status, const HttpHeaders& headers,
                      std::string_view body, std::size_t piece = 0,
                      const ProviderConfig* provider = nullptr) {
  static const ManualClock clock;
  static const ProviderConfig default_provider = make_provider("test");
  auto decoder =
      adapter.make_decoder({.stream = stream}, provider ? *provider : default_provider, clock);
  RecordingListener listener;
  decoder->on_headers(status, headers);
  if (piece == 0) piece = body.size() == 0 ? 1 : body.size();
  for (std::size_t pos = 0; pos < body.size(); pos += piece) {
    decoder->on_body(body.substr(pos, piece), listener);
  }
  record_finish(*decoder, listener);
  return listener.decoded;
}

// Splits `body` into two pieces at every byte boundary and checks each split decodes the same
// as the whole body (a stream may be cut anywhere by TCP).
inline void expect_same_at_every_split(const Adapter& adapter, const HttpHeaders& headers,
                                       std::string_view body, const Decoded& whole) {
  static const ManualClock clock;
  static const ProviderConfig provider = make_provider("test");
  for (std::size_t split = 1; split < body.size(); ++split) {
    auto decoder = adapter.make_decoder({.stream = true}, provider, clock);
    RecordingListener listener;
    decoder->on_headers(200, headers);
    decoder->on_body(body.substr(0, split), listener);
    decoder->on_body(body.substr(split), listener);
    record_finish(*decoder, listener);
    const Decoded& d = listener.decoded;
    ASSERT_EQ(d.content, whole.content) << "split at " << split;
    ASSERT_EQ(d.thinking, whole.thinking) << "split at " << split;
    ASSERT_EQ(d.tool_calls.size(), whole.tool_calls.size()) << "split at " << split;
    for (const auto& [index, call] : whole.tool_calls) {
      ASSERT_EQ(d.tool_calls.at(index), call) << "split at " << split;
    }
    ASSERT_EQ(d.prompt_tokens, whole.prompt_tokens) << "split at " << split;
    ASSERT_EQ(d.completion_tokens, whole.completion_tokens) << "split at " << split;
    ASSERT_EQ(d.finish, whole.finish) << "split at " << split;
    ASSERT_EQ(d.terminators, whole.terminators) << "split at " << split;
    ASSERT_EQ(d.malformed, whole.malformed) << "split at " << split;
    ASSERT_EQ(d.request_id, whole.request_id) << "split at " << split;
    ASSERT_EQ(d.stream_error.has_value(), whole.stream_error.has_value()) << "split at " << split;
  }
}

inline const Adapter& adapter(std::string_view type) {
  const Adapter* found = adapter_for_type(type);
  if (found == nullptr) throw std::runtime_error("no adapter " + std::string(type));
  return *found;
}

// Builds and returns the parsed body; fails the test if the build failed.
inline Json built_body(const BuiltRequest& built) {
  return Json::parse(built.http.body);
}

inline std::string header_value(const HttpHeaders& headers, std::string_view name) {
  for (const HttpHeader& h : headers) {
    if (h.name.size() == name.size() &&
        std::equal(h.name.begin(), h.name.end(), name.begin(),
                   [](char a, char b) { return std::tolower(a) == std::tolower(b); })) {
      return h.value;
    }
  }
  return "<absent>";
}

// 1x1 PNG / JPEG / GIF / WEBP headers in base64 (enough bytes for sniffing).
inline constexpr std::string_view kPngBase64 =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+"
    "M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
inline constexpr std::string_view kJpegBase64 = "/9j/4AAQSkZJRgABAQEASABIAAD/2wBDAP//";
inline constexpr std::string_view kGifBase64 =
    "R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7";
inline constexpr std::string_view kWebpBase64 = "UklGRhoAAABXRUJQVlA4TA0AAAAvAAAAEAcQERGIiP4HAA==";

// A conversation that uses every feature: system prompt, an image, two tool calls, their results
// (the second named only by function), stop, limits, sampling and thinking.
inline protocol::Request rich_request(bool with_image = true) {
  protocol::Request r;
  r.provider = "p";
  r.model = "m";
  protocol::Message system{"system", "You are terse.", "", {}, {}, "", ""};
  protocol::Message user{"user", "What is in this image?", "", {}, {}, "", ""};
  if (with_image) user.images.push_back(std::string(kPngBase64));
  protocol::Message assistant{"assistant", "", "", {}, {}, "", ""};
  assistant.tool_calls = {{"call_1", "get_weather", R"({"city":"Paris"})"},
                          {"call_2", "get_time", ""}};
  protocol::Message result1{"tool", "sunny", "", {}, {}, "call_1", ""};
  protocol::Message result2{"tool", "noon", "", {}, {}, "", "get_time"};
  protocol::Message thanks{"user", "thanks", "", {}, {}, "", ""};
  r.messages = {system, user, assistant, result1, result2, thanks};
  r.stream = true;
  r.temperature = 1.5;
  r.max_tokens = 100;
  r.top_p = 0.9;
  r.stop = {"END"};
  r.tools = {{"get_weather", "Weather for a city",
              R"({"type":"object","properties":{"city":{"type":"string"}},"required":["city"]})"},
             {"get_time", "", ""}};
  r.tool_choice = "auto";
  r.think = true;
  r.thinking_budget = 2048;
  return r;
}

inline Json weather_schema() {
  return Json::parse(
      R"({"type":"object","properties":{"city":{"type":"string"}},"required":["city"]})");
}

inline std::string joined(std::initializer_list<std::string_view> parts) {
  std::string out;
  for (std::string_view p : parts) out += p;
  return out;
}

}  // namespace dispatch::worker::test
