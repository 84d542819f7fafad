#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "providers_test_support.hpp"

namespace dispatch::worker::test {
namespace {

using protocol::ErrorKind;

ProviderConfig local_ollama() {
  ProviderConfig provider = make_provider("ollama", "");
  provider.api_key_env.clear();  // a local server takes no key
  return provider;
}

Result<BuiltRequest, Failure> build(const protocol::Request& request, bool stream = true,
                                    const ProviderConfig& provider = local_ollama()) {
  return adapter("ollama").build(request, "llama3.2", stream, provider);
}

TEST(OllamaBuild, RichRequest) {
  ProviderConfig provider = make_provider("ollama", "");
  provider.api_key_env.clear();
  provider.base_url = "http://127.0.0.1:11434";
  auto result = build(rich_request(), true, provider);
  ASSERT_TRUE(result.ok()) << result.error().message;
  const BuiltRequest& built = result.value();
  const Json expected = Json::parse(joined({R"({
    "model":"llama3.2","stream":true,
    "messages":[
      {"role":"system","content":"You are terse."},
      {"role":"user","content":"What is in this image?","images":[")",
                                            kPngBase64, R"("]},
      {"role":"assistant","content":"","tool_calls":[
        {"id":"call_1","function":{"index":0,"name":"get_weather","arguments":{"city":"Paris"}}},
        {"id":"call_2","function":{"index":1,"name":"get_time","arguments":{}}}]},
      {"role":"tool","content":"sunny","tool_name":"get_weather"},
      {"role":"tool","content":"noon","tool_name":"get_time"},
      {"role":"user","content":"thanks"}],
    "options":{"temperature":1.5,"top_p":0.9,"stop":["END"],"num_predict":100},
    "think":true,
    "tools":[
      {"type":"function","function":{"name":"get_weather","description":"Weather for a city",
        "parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}},
      {"type":"function","function":{"name":"get_time","parameters":{"type":"object","properties":{}}}}]
  })"}));
  EXPECT_EQ(built_body(built), expected) << built_body(built).dump(2);
  EXPECT_EQ(built.http.url, "http://127.0.0.1:11434/api/chat");
  EXPECT_EQ(header_value(built.http.headers, "Authorization"), "<absent>");
  EXPECT_TRUE(built.notes.empty());
}

TEST(OllamaBuild, StreamFalseIsExplicitAndFormats) {
  protocol::Request request;
  request.messages = {
      {"user", "hi", "", {"data:image/png;base64," + std::string(kPngBase64)}, {}, "", ""}};
  request.response_format = "json_object";
  request.temperature = 0.0;
  auto result = build(request, false);
  ASSERT_TRUE(result.ok());
  Json body = built_body(result.value());
  EXPECT_EQ(body["stream"], false);
  EXPECT_EQ(body["format"], "json");
  EXPECT_EQ(body["options"], Json::parse(R"({"temperature":0.0})"));
  EXPECT_EQ(body["messages"][0]["images"][0], kPngBase64);  // data: prefix stripped

  request.response_format = "json_schema";
  request.response_schema = R"({"type":"object","properties":{"age":{"type":"integer"}}})";
  body = built_body(build(request).value());
  EXPECT_EQ(body["format"], Json::parse(request.response_schema));
}

TEST(OllamaBuild, ToolChoice) {
  protocol::Request request = rich_request(false);
  request.tool_choice = "none";  // expressed by not offering the tools
  auto built = build(request).value();
  EXPECT_FALSE(built_body(built).contains("tools"));
  request.tool_choice = "required";
  built = build(request).value();
  EXPECT_TRUE(built_body(built).contains("tools"));
  EXPECT_EQ(built.notes,
            std::vector<std::string>{"tool_choice required not sent (ollama has no tool_choice)"});
}

TEST(OllamaBuild, KeyOnlyWhenConfigured) {
  protocol::Request request;
  request.messages = {{"user", "hi", "", {}, {}, "", ""}};
  ProviderConfig cloud = make_provider("ollama", "");
  cloud.api_key_env = "OLLAMA_API_KEY";
  auto result = build(request, true, cloud);
  ASSERT_TRUE(!result.ok());
  EXPECT_EQ(result.error().message, "no API key: set OLLAMA_API_KEY");
  cloud.api_key = "ollama-key";
  result = build(request, true, cloud);
  EXPECT_EQ(header_value(result.value().http.headers, "Authorization"), "Bearer ollama-key");
}

TEST(OllamaBuild, ImageUrlsAreRejected) {
  protocol::Request request;
  request.messages = {{"user", "hi", "", {"https://example.com/cat.png"}, {}, "", ""}};
  auto result = build(request);
  ASSERT_TRUE(!result.ok());
  EXPECT_EQ(result.error().message, "messages[0].images[0]: ollama takes base64 images, not URLs");
}

const std::string kStream = joined({
    R"({"model":"llama3.2","created_at":"2023-08-04T08:52:19.385406455-07:00","message":{"role":"assistant","content":"","thinking":"Let me"},"done":false})",
    "\n",
    R"({"model":"llama3.2","created_at":"2023-08-04T08:52:19.4-07:00","message":{"role":"assistant","content":"The"},"done":false})",
    "\n\n",
    R"({"model":"llama3.2","created_at":"2023-08-04T08:52:19.5-07:00","message":{"role":"assistant","content":" sky ✓"},"done":false})",
    "\n",
    R"({"model":"llama3.2","created_at":"2023-08-04T08:52:19.6-07:00","message":{"role":"assistant","content":"","tool_calls":[{"function":{"name":"get_weather","arguments":{"city":"Paris"}}},{"id":"call_x","function":{"index":1,"name":"get_time","arguments":{}}}]},"done":false})",
    "\n",
    R"({"model":"llama3.2","created_at":"2023-08-04T19:22:45.499127Z","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","total_duration":4883583458,"load_duration":1334875,"prompt_eval_count":26,"prompt_eval_duration":342546000,"eval_count":282,"eval_duration":4535599000})",
    // Ollama ends the body without a final newline.
});

TEST(OllamaDecode, StreamAtEveryByteBoundary) {
  const HttpHeaders headers = {{"content-type", "application/x-ndjson"}};
  const Decoded whole = decode(adapter("ollama"), true, 200, headers, kStream);
  EXPECT_EQ(whole.thinking, "Let me");
  EXPECT_EQ(whole.content, "The sky ✓");
  ASSERT_EQ(whole.tool_calls.size(), 2u);
  // Arguments arrive as objects and leave as JSON text; a missing id is made up.
  EXPECT_EQ(whole.tool_calls.at(0),
            (protocol::ToolCall{"call_0", "get_weather", R"({"city":"Paris"})"}));
  EXPECT_EQ(whole.tool_calls.at(1), (protocol::ToolCall{"call_x", "get_time", "{}"}));
  EXPECT_EQ(whole.prompt_tokens, 26u);
  EXPECT_EQ(whole.completion_tokens, 282u);
  EXPECT_EQ(whole.finish, "tool_calls");  // Ollama says stop after tool calls
  EXPECT_EQ(whole.raw_finish, "stop");
  EXPECT_EQ(whole.model, "llama3.2");
  EXPECT_EQ(whole.created_at, 1691164339);  // RFC 3339 with offset -> Unix seconds
  EXPECT_EQ(whole.terminators, 1);
  expect_same_at_every_split(adapter("ollama"), headers, kStream, whole);
}

TEST(OllamaDecode, LengthAndWholeBody) {
  const std::string body =
      R"({"model":"llama3.2","created_at":"2024-01-01T00:00:00Z","message":{"role":"assistant","content":"Hi there"},"done":true,"done_reason":"length","prompt_eval_count":3,"eval_count":2})";
  const Decoded d =
      decode(adapter("ollama"), false, 200, {{"content-type", "application/json"}}, body, 5);
  EXPECT_EQ(d.content, "Hi there");
  EXPECT_EQ(d.finish, "length");
  EXPECT_EQ(d.created_at, 1704067200);
  EXPECT_EQ(d.prompt_tokens, 3u);
  EXPECT_EQ(d.completion_tokens, 2u);
}

TEST(OllamaDecode, ErrorLineAfterStreamingStarted) {
  const std::string body =
      joined({R"({"model":"m","message":{"content":"par"},"done":false})", "\n",
              R"({"error":"an error was encountered while running the model"})", "\n"});
  const Decoded d = decode(adapter("ollama"), true, 200, {}, body);
  ASSERT_TRUE(d.stream_error);
  EXPECT_EQ(d.stream_error->kind, ErrorKind::server_error);
  EXPECT_EQ(d.stream_error->message, "an error was encountered while running the model");
}

TEST(OllamaDecode, MalformedLineAndCutStream) {
  const std::string body = joined({R"({"message":{"content":"a"},"done":false})", "\n", "{broken\n",
                                   R"({"message":{"content":"b"},"done":false})", "\n"});
  const Decoded d = decode(adapter("ollama"), true, 200, {}, body);
  EXPECT_EQ(d.content, "ab");
  EXPECT_EQ(d.malformed, 1);
  EXPECT_EQ(d.terminators, 0);  // no done:true: incomplete
}

TEST(OllamaDecode, ErrorBodies) {
  Decoded d = decode(adapter("ollama"), true, 404, {}, R"({"error":"model 'nope' not found"})");
  EXPECT_EQ(d.finish_failure->kind, ErrorKind::model_not_available);
  EXPECT_EQ(d.finish_failure->message, "model 'nope' not found");
  d = decode(adapter("ollama"), false, 400, {}, R"({"error":"model is required"})");
  EXPECT_EQ(d.finish_failure->kind, ErrorKind::invalid_request);
  d = decode(adapter("ollama"), false, 500, {},
             R"({"error":"llama runner process has terminated"})");
  EXPECT_EQ(d.finish_failure->kind, ErrorKind::server_error);
  // A 200 whose body is an error report.
  d = decode(adapter("ollama"), false, 200, {}, R"({"error":"unexpected EOF"})");
  ASSERT_TRUE(d.finish_failure);
  EXPECT_EQ(d.finish_failure->kind, ErrorKind::server_error);
}

}  // namespace
}  // namespace dispatch::worker::test
