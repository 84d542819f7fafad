#pragma once

// A small blocking HTTP client over libcurl easy for the conformance tests, plus parsers for
// the stream framings (SSE, DashScope SSE, NDJSON) and a fixture owning one fake-provider.

#include <curl/curl.h>
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "dispatch/test/fake_provider_process.hpp"

namespace dispatch::fake_provider::test {

using nlohmann::json;

struct HttpResult {
  CURLcode curl_code = CURLE_OK;
  long status = 0;
  std::string body;
  std::multimap<std::string, std::string> headers;  // names lower-cased
  double elapsed_ms = 0;
  std::string error;  // curl's error buffer

  std::optional<std::string> header(const std::string& name) const;
  json json_body() const;  // discarded JSON when the body is not JSON
};

struct HttpCall {
  std::string method = "POST";
  std::string url;
  std::vector<std::string> headers;  // "Name: value"
  std::string body;
  long timeout_ms = 10000;
};

HttpResult perform(const HttpCall& call);

// One SSE event: `event:` name (may be empty), `data:` payload, `id:`, and comment lines.
struct SseEvent {
  std::string event;
  std::string data;
  std::string id;
  std::vector<std::string> comments;
};

// Parses text/event-stream; accepts "field: value" and "field:value".
std::vector<SseEvent> parse_sse(const std::string& body);
std::vector<std::string> split_lines(const std::string& body);  // NDJSON, empty lines dropped

inline json user(const std::string& text) {
  return json{{"role", "user"}, {"content", text}};
}

// Owns a fake-provider child shared by the tests of one suite (one per process under CTest).
class FakeProviderTest : public ::testing::Test {
 public:
  static void SetUpTestSuite();
  static void TearDownTestSuite();
  void SetUp() override;

  static std::string url(const std::string& path);
  static dispatch::test::FakeProviderProcess& fake() { return *fake_; }

  // Requests in each format with valid default auth headers.
  static HttpResult openai(const json& body, std::vector<std::string> headers = {},
                           long timeout_ms = 10000);
  static HttpResult compatible(const json& body, std::vector<std::string> headers = {},
                               long timeout_ms = 10000);
  static HttpResult anthropic(const json& body, std::vector<std::string> headers = {},
                              long timeout_ms = 10000);
  static HttpResult ollama(const json& body, std::vector<std::string> headers = {},
                           long timeout_ms = 10000);
  // Streaming is chosen by `stream` (adds X-DashScope-SSE: enable).
  static HttpResult dashscope(const json& body, bool stream, std::vector<std::string> headers = {},
                              long timeout_ms = 10000);

  // GET /_fake/log?model=<model>, the attempts array.
  static json attempts(const std::string& model);
  // The single attempt for `model` (fails the test when there is not exactly one).
  static json only_attempt(const std::string& model);
  // Polls the log (bounded by `timeout`) until the last attempt for `model` has `field`;
  // returns that attempt, or the last one seen.
  static json await_attempt_field(const std::string& model, const std::string& field,
                                  std::chrono::milliseconds timeout = std::chrono::seconds(5));

 private:
  static inline std::unique_ptr<dispatch::test::FakeProviderProcess> fake_;
};

}  // namespace dispatch::fake_provider::test
