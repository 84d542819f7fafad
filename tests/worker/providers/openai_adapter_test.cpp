#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "providers_test_support.hpp"

namespace dispatch::worker::test {
namespace {

using protocol::ErrorKind;

BuiltRequest build_ok(std::string_view type, const protocol::Request& request,
                      const ProviderConfig& provider, bool stream = true,
                      const std::string& model = "gpt-x") {
  auto built = adapter(type).build(request, model, stream, provider);
  if (!built) {
    ADD_FAILURE() << "build failed: " << built.error().message;
    return {};
  }
  return built.value();
}

Failure build_failure(std::string_view type, const protocol::Request& request,
                      const ProviderConfig& provider) {
  auto built = adapter(type).build(request, "gpt-x", true, provider);
  if (built.ok()) {
    ADD_FAILURE() << "build succeeded";
    return {};
  }
  return built.error();
}

Json expected_openai_messages() {
  return Json::parse(joined({R"([
    {"role":"system","content":"You are terse."},
    {"role":"user","content":[{"type":"text","text":"What is in this image?"},
      {"type":"image_url","image_url":{"url":"data:image/png;base64,)",
                             kPngBase64, R"("}}]},
    {"role":"assistant","content":null,"tool_calls":[
      {"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},
      {"id":"call_2","type":"function","function":{"name":"get_time","arguments":"{}"}}]},
    {"role":"tool","tool_call_id":"call_1","content":"sunny"},
    {"role":"tool","tool_call_id":"call_2","content":"noon"},
    {"role":"user","content":"thanks"}])"}));
}

Json expected_tools() {
  Json tools = Json::array();
  tools.push_back({{"type", "function"},
                   {"function",
                    {{"name", "get_weather"},
                     {"description", "Weather for a city"},
                     {"parameters", weather_schema()}}}});
  tools.push_back({{"type", "function"},
                   {"function",
                    {{"name", "get_time"},
                     {"parameters", {{"type", "object"}, {"properties", Json::object()}}}}}});
  return tools;
}

TEST(OpenAiBuild, RichRequest) {
  ProviderConfig provider = make_provider("openai");
  provider.base_url = "https://api.example.com/v1/";
  provider.extra_headers = {{"OpenAI-Organization", "org-1"}};
  const BuiltRequest built = build_ok("openai", rich_request(), provider);
  Json expected = {{"model", "gpt-x"},
                   {"messages", expected_openai_messages()},
                   {"stream", true},
                   {"stream_options", {{"include_usage", true}}},
                   {"temperature", 1.5},
                   {"top_p", 0.9},
                   {"max_completion_tokens", 100},
                   {"stop", {"END"}},
                   {"tools", expected_tools()},
                   {"tool_choice", "auto"}};
  EXPECT_EQ(built_body(built), expected) << built_body(built).dump(2);
  EXPECT_EQ(built.http.method, "POST");
  EXPECT_EQ(built.http.url, "https://api.example.com/v1/chat/completions");
  EXPECT_EQ(header_value(built.http.headers, "Authorization"), "Bearer sk-test-key-123456");
  EXPECT_EQ(header_value(built.http.headers, "Content-Type"), "application/json");
  EXPECT_EQ(header_value(built.http.headers, "Accept"), "text/event-stream");
  EXPECT_EQ(header_value(built.http.headers, "OpenAI-Organization"), "org-1");
  EXPECT_THAT(built.notes, ::testing::ElementsAre(::testing::HasSubstr("think not sent")));
}

TEST(OpenAiBuild, CompatibleUsesMaxTokensAndThinkingExtras) {
  const BuiltRequest built = build_ok("openai-compatible", rich_request(), make_provider("x"));
  const Json body = built_body(built);
  EXPECT_EQ(body["max_tokens"], 100);
  EXPECT_FALSE(body.contains("max_completion_tokens"));
  EXPECT_EQ(body["enable_thinking"], true);
  EXPECT_EQ(body["thinking_budget"], 2048);
  EXPECT_EQ(body["messages"], expected_openai_messages());
  EXPECT_TRUE(built.notes.empty());
}

TEST(OpenAiBuild, MinimalNonStreamUsesConfigTemperature) {
  protocol::Request request;
  request.messages = {{"user", "hi", "", {}, {}, "", ""}};
  ProviderConfig provider = make_provider("openai");
  provider.temperature = 0.2;
  BuiltRequest built = build_ok("openai", request, provider, false);
  EXPECT_EQ(built_body(built), Json::parse(R"({"model":"gpt-x","messages":[{"role":"user",
            "content":"hi"}],"stream":false,"temperature":0.2})"));
  EXPECT_EQ(header_value(built.http.headers, "Accept"), "application/json");
  provider.temperature = std::nullopt;  // YAML null: no temperature at all
  built = build_ok("openai", request, provider, false);
  EXPECT_FALSE(built_body(built).contains("temperature"));
}

TEST(OpenAiBuild, ToolChoiceAndResponseFormats) {
  protocol::Request request = rich_request(false);
  request.tool_choice = "function";
  request.tool_choice_function = "get_time";
  request.response_format = "json_schema";
  request.response_schema = R"({"type":"object"})";
  Json body = built_body(build_ok("openai", request, make_provider("openai")));
  EXPECT_EQ(body["tool_choice"],
            Json::parse(R"({"type":"function","function":{"name":"get_time"}})"));
  EXPECT_EQ(body["response_format"], Json::parse(R"({"type":"json_schema","json_schema":
            {"name":"response","schema":{"type":"object"}}})"));
  request.tool_choice = "required";
  request.response_format = "json_object";
  body = built_body(build_ok("openai", request, make_provider("openai")));
  EXPECT_EQ(body["tool_choice"], "required");
  EXPECT_EQ(body["response_format"], Json::parse(R"({"type":"json_object"})"));
}

TEST(OpenAiBuild, ImageMediaTypesAreSniffed) {
  for (const auto& [b64, type] :
       std::vector<std::pair<std::string_view, std::string>>{{kPngBase64, "image/png"},
                                                             {kJpegBase64, "image/jpeg"},
                                                             {kGifBase64, "image/gif"},
                                                             {kWebpBase64, "image/webp"}}) {
    protocol::Request request;
    // A data: URL prefix is accepted and replaced by the sniffed type.
    request.messages = {
        {"user", "", "", {"data:image/whatever;base64," + std::string(b64)}, {}, "", ""}};
    const Json body = built_body(build_ok("openai", request, make_provider("openai")));
    EXPECT_EQ(body["messages"][0]["content"],
              Json::parse(R"([{"type":"image_url","image_url":{"url":"data:)" + type + ";base64," +
                          std::string(b64) + R"("}}])"))
        << type;
  }
}

TEST(OpenAiBuild, RequestsTheFormatCannotExpress) {
  const ProviderConfig provider = make_provider("openai");
  protocol::Request request;
  request.messages = {{"user", "hi", "", {}, {}, "", ""}};
  request.stop = {"a", "b", "c", "d", "e"};
  Failure failure = build_failure("openai", request, provider);
  EXPECT_EQ(failure.kind, ErrorKind::invalid_request);
  EXPECT_EQ(failure.message, "stop: openai accepts at most 4 stop sequences (got 5)");
  // Compatible servers document no such limit.
  EXPECT_TRUE(adapter("openai-compatible").build(request, "m", true, provider).ok());

  request.stop.clear();
  request.messages[0].images = {"not base64!"};
  failure = build_failure("openai", request, provider);
  EXPECT_EQ(failure.kind, ErrorKind::invalid_request);
  EXPECT_EQ(failure.message, "messages[0].images[0]: image is not valid base64");

  request.messages[0].images = {"AAAAAAAAAAAA"};
  EXPECT_EQ(build_failure("openai", request, provider).message,
            "messages[0].images[0]: unrecognised image format (expected png, jpeg, gif or webp)");

  request.messages[0].images.clear();
  request.messages[0].role = "robot";
  EXPECT_EQ(build_failure("openai", request, provider).message,
            "messages[0].role: unknown role 'robot'");

  request.messages[0].role = "user";
  request.tools = {{"f", "", "{not json"}};
  EXPECT_EQ(build_failure("openai", request, provider).message,
            "tools[0].parameters: not valid JSON");

  request.tools = {{"f", "", ""}};
  request.tool_choice = "sometimes";
  EXPECT_EQ(build_failure("openai", request, provider).message,
            "tool_choice: unknown value 'sometimes' (expected auto, none, required or function)");

  request.tool_choice.clear();
  request.messages.push_back({"tool", "42", "", {}, {}, "", ""});
  EXPECT_THAT(build_failure("openai", request, provider).message,
              ::testing::StartsWith("messages[1]: tool result needs tool_call_id"));

  request.messages.clear();
  EXPECT_EQ(build_failure("openai", request, provider).message, "messages: empty");
}

TEST(OpenAiBuild, MissingKey) {
  ProviderConfig provider = make_provider("openai", "");
  provider.api_key_env = "OPENAI_API_KEY";
  protocol::Request request;
  request.messages = {{"user", "hi", "", {}, {}, "", ""}};
  const Failure failure = build_failure("openai", request, provider);
  EXPECT_EQ(failure.kind, ErrorKind::authentication);
  EXPECT_EQ(failure.message, "no API key: set OPENAI_API_KEY");
  // A compatible server without a configured key variable needs none.
  provider.api_key_env.clear();
  const auto built = adapter("openai-compatible").build(request, "m", true, provider);
  ASSERT_TRUE(built.ok());
  EXPECT_EQ(header_value(built.value().http.headers, "Authorization"), "<absent>");
}

const std::string kStream = joined({
    ": keep-alive comment\n\n",
    R"(data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-2024","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null})",
    "\n\n",
    R"(data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-2024","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]})",
    "\r\n\r\n",
    R"(data: {"id":"chatcmpl-1","choices":[{"index":0,"delta":{"content":"lo ✓"},"finish_reason":null}]})",
    "\n\n",
    R"(data: {"id":"chatcmpl-1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}]})",
    "\n\n",
    R"(data: {"id":"chatcmpl-1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]},"finish_reason":null}]})",
    "\n\n",
    R"(data: {"id":"chatcmpl-1","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]},"finish_reason":null}]})",
    "\n\n",
    R"(data: {"id":"chatcmpl-1","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"get_time","arguments":"{}"}}]},"finish_reason":null}]})",
    "\n\n",
    R"(data: {"id":"chatcmpl-1","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]})",
    "\n\n",
    R"(data: {"id":"chatcmpl-1","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19}})",
    "\n\n",
    "data: [DONE]\n\n",
});

TEST(OpenAiDecode, StreamAtEveryByteBoundary) {
  const HttpHeaders headers = {{"content-type", "text/event-stream"}, {"x-request-id", "req_h"}};
  const Decoded whole = decode(adapter("openai"), true, 200, headers, kStream);
  EXPECT_EQ(whole.content, "Hello ✓");
  ASSERT_EQ(whole.tool_calls.size(), 2u);
  EXPECT_EQ(whole.tool_calls.at(0),
            (protocol::ToolCall{"call_a", "get_weather", R"({"city":"Paris"})"}));
  EXPECT_EQ(whole.tool_calls.at(1), (protocol::ToolCall{"call_b", "get_time", "{}"}));
  EXPECT_EQ(whole.prompt_tokens, 12u);
  EXPECT_EQ(whole.completion_tokens, 7u);
  EXPECT_EQ(whole.finish, "tool_calls");
  EXPECT_EQ(whole.raw_finish, "tool_calls");
  EXPECT_EQ(whole.request_id, "chatcmpl-1");  // the body's id wins over x-request-id
  EXPECT_EQ(whole.model, "gpt-4o-2024");
  EXPECT_EQ(whole.created_at, 1700000000);
  EXPECT_EQ(whole.terminators, 1);
  EXPECT_EQ(whole.malformed, 0);
  EXPECT_FALSE(whole.stream_error);
  EXPECT_FALSE(whole.finish_failure);
  expect_same_at_every_split(adapter("openai"), headers, kStream, whole);
  // One byte at a time.
  const Decoded bytewise = decode(adapter("openai"), true, 200, headers, kStream, 1);
  EXPECT_EQ(bytewise.content, whole.content);
  EXPECT_EQ(bytewise.tool_calls, whole.tool_calls);
}

TEST(OpenAiDecode, MalformedEventIsSkippedAndStreamGoesOn) {
  const std::string body =
      joined({R"(data: {"choices":[{"delta":{"content":"a"}}]})", "\n\n", "data: {not json\n\n",
              R"(data: {"choices":[{"delta":{"content":"b"},"finish_reason":"length"}]})", "\n\n",
              "data: [DONE]\n\n"});
  const Decoded d = decode(adapter("openai"), true, 200, {}, body);
  EXPECT_EQ(d.content, "ab");
  EXPECT_EQ(d.malformed, 1);
  EXPECT_EQ(d.finish, "length");
  EXPECT_EQ(d.terminators, 1);
}

TEST(OpenAiDecode, UnterminatedStreamHasNoTerminator) {
  const std::string body = R"(data: {"choices":[{"delta":{"content":"a"}}]})"
                           "\n\n"
                           R"(data: {"choices":[{"delta":{"content":"b"}})";  // cut mid-event
  const Decoded d = decode(adapter("openai"), true, 200, {}, body);
  EXPECT_EQ(d.content, "a");
  EXPECT_EQ(d.terminators, 0);
  EXPECT_FALSE(d.finish_failure);
}

TEST(OpenAiDecode, ErrorEventInsideStream) {
  const std::string body = joined(
      {R"(data: {"choices":[{"delta":{"content":"a"}}]})", "\n\n",
       R"(data: {"error":{"message":"The server had an error","type":"server_error","code":null}})",
       "\n\n", R"(data: {"choices":[{"delta":{"content":"ignored"}}]})", "\n\n"});
  const Decoded d = decode(adapter("openai"), true, 200, {}, body);
  ASSERT_TRUE(d.stream_error);
  EXPECT_EQ(d.stream_error->kind, ErrorKind::server_error);
  EXPECT_EQ(d.stream_error->message, "The server had an error");
  EXPECT_EQ(d.content, "a");
}

TEST(OpenAiDecode, CompatibleReasoningContentIsThinking) {
  const std::string body = joined(
      {R"(data: {"id":"c1","choices":[{"index":0,"delta":{"content":null,"reasoning_content":"Let me"},"finish_reason":null}],"usage":null})",
       "\n\n",
       R"(data: {"id":"c1","choices":[{"index":0,"delta":{"content":"Hi","reasoning_content":null},"finish_reason":"stop"}],"usage":null})",
       "\n\n",
       R"(data: {"id":"c1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}})",
       "\n\ndata: [DONE]\n\n"});
  const Decoded d = decode(adapter("openai-compatible"), true, 200, {}, body);
  EXPECT_EQ(d.thinking, "Let me");
  EXPECT_EQ(d.content, "Hi");
  EXPECT_EQ(d.finish, "stop");
  EXPECT_EQ(d.prompt_tokens, 3u);
}

TEST(OpenAiDecode, WholeBody) {
  const std::string body = R"({"id":"chatcmpl-9","object":"chat.completion","created":1710000000,
    "model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Sure.",
    "tool_calls":[{"id":"call_z","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},
    "finish_reason":"content_filter"}],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}})";
  const Decoded d = decode(adapter("openai"), false, 200, {}, body, 7);
  EXPECT_EQ(d.content, "Sure.");
  EXPECT_EQ(d.tool_calls.at(0), (protocol::ToolCall{"call_z", "f", R"({"a":1})"}));
  EXPECT_EQ(d.finish, "content_filter");
  EXPECT_EQ(d.prompt_tokens, 5u);
  EXPECT_EQ(d.completion_tokens, 2u);
  EXPECT_EQ(d.request_id, "chatcmpl-9");
  EXPECT_EQ(d.created_at, 1710000000);
  EXPECT_FALSE(d.finish_failure);
}

TEST(OpenAiDecode, CachedPromptTokens) {
  const std::string body =
      R"({"id":"chatcmpl-c","choices":[{"index":0,"message":{"role":"assistant",
    "content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":2006,"completion_tokens":300,
    "total_tokens":2306,"prompt_tokens_details":{"cached_tokens":1920,"audio_tokens":0}}})";
  const Decoded d = decode(adapter("openai"), false, 200, {}, body);
  EXPECT_EQ(d.prompt_tokens, 2006u);  // cached tokens are part of the prompt
  EXPECT_EQ(d.cached_tokens, 1920u);
  // The usage chunk of a stream carries them the same way.
  const std::string stream =
      "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ok\"},"
      "\"finish_reason\":\"stop\"}]}\n\n"
      "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":50,"
      "\"completion_tokens\":1,\"prompt_tokens_details\":{\"cached_tokens\":32}}}\n\n"
      "data: [DONE]\n\n";
  const Decoded streamed = decode(adapter("openai"), true, 200, {}, stream);
  EXPECT_EQ(streamed.prompt_tokens, 50u);
  EXPECT_EQ(streamed.cached_tokens, 32u);
}

TEST(OpenAiDecode, StreamRequestAnsweredWithJsonIsDecodedWhole) {
  const std::string body =
      R"({"id":"x","choices":[{"message":{"content":"whole"},"finish_reason":"stop"}]})";
  const Decoded d =
      decode(adapter("openai"), true, 200, {{"content-type", "application/json"}}, body, 3);
  EXPECT_EQ(d.content, "whole");
  EXPECT_EQ(d.finish, "stop");
}

TEST(OpenAiDecode, ErrorBodies) {
  Decoded d = decode(
      adapter("openai"), true, 429, {{"retry-after", "3"}, {"x-request-id", "r1"}},
      R"({"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}})");
  ASSERT_TRUE(d.finish_failure);
  EXPECT_EQ(d.finish_failure->kind, ErrorKind::rate_limited);
  EXPECT_EQ(d.finish_failure->status, 429);
  EXPECT_EQ(d.finish_failure->code, "rate_limit_exceeded");
  EXPECT_EQ(d.finish_failure->retry_after_ms, 3000u);
  EXPECT_EQ(d.content, "");

  d = decode(
      adapter("openai"), false, 400, {},
      R"({"error":{"message":"This model's maximum context length is 128000 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}})");
  EXPECT_EQ(d.finish_failure->kind, ErrorKind::context_length_exceeded);

  d = decode(
      adapter("openai"), false, 401, {},
      R"({"error":{"message":"Incorrect API key provided: sk-test-key-123456.","type":"invalid_request_error","code":"invalid_api_key"}})");
  EXPECT_EQ(d.finish_failure->kind, ErrorKind::authentication);
  EXPECT_EQ(d.finish_failure->message, "Incorrect API key provided: ***.");

  // vLLM's flat shape with a numeric code.
  d = decode(
      adapter("openai-compatible"), false, 400, {},
      R"({"object":"error","message":"bad temperature","type":"BadRequestError","code":400})");
  EXPECT_EQ(d.finish_failure->kind, ErrorKind::invalid_request);
  EXPECT_EQ(d.finish_failure->message, "bad temperature");
  EXPECT_EQ(d.finish_failure->code, "400");

  // A proxy's HTML page: the status decides, an excerpt explains.
  d = decode(adapter("openai"), true, 502, {}, "<html><body>Bad Gateway</body></html>");
  EXPECT_EQ(d.finish_failure->kind, ErrorKind::server_error);
  EXPECT_EQ(d.finish_failure->message, "<html><body>Bad Gateway</body></html>");

  // Error bodies are bounded: only the first 64 KiB are kept.
  const std::string huge(1 << 20, 'x');
  d = decode(adapter("openai"), true, 503, {}, huge, 4096);
  EXPECT_EQ(d.finish_failure->kind, ErrorKind::overloaded);
  EXPECT_LE(d.finish_failure->message.size(), 200u);
}

TEST(OpenAiDecode, WholeBodyIsBoundedByMaxResponseBytes) {
  const std::string chunk(1 << 20, ' ');
  static const ManualClock clock;
  const ProviderConfig provider = make_provider("openai");
  auto decoder = adapter("openai").make_decoder({.stream = false, .max_body_bytes = 3u << 20},
                                                provider, clock);
  RecordingListener listener;
  decoder->on_headers(200, {});
  int fed = 0;
  for (; fed < 40 && !listener.decoded.stream_error; ++fed) decoder->on_body(chunk, listener);
  ASSERT_TRUE(listener.decoded.stream_error);
  EXPECT_EQ(fed, 4);  // the fourth MiB is over the bound
  EXPECT_EQ(listener.decoded.stream_error->kind, ErrorKind::invalid_request);
  EXPECT_EQ(listener.decoded.stream_error->code, "response_too_large");
  EXPECT_THAT(listener.decoded.stream_error->message,
              ::testing::HasSubstr("worker.max_response_bytes (3145728 bytes)"));
}

TEST(OpenAiDecode, UnparsableWholeBody) {
  const Decoded d = decode(adapter("openai"), false, 200, {}, "{\"id\":");
  ASSERT_TRUE(d.finish_failure);
  EXPECT_EQ(d.finish_failure->kind, ErrorKind::server_error);
  EXPECT_EQ(d.finish_failure->message, "unparsable response body (6 bytes)");
}

TEST(AdapterRegistry, OneAdapterPerType) {
  for (std::string_view type :
       {"ollama", "openai", "openai-compatible", "dashscope", "anthropic"}) {
    const Adapter* found = adapter_for_type(type);
    ASSERT_NE(found, nullptr) << type;
    EXPECT_EQ(found->type(), type);
  }
  EXPECT_EQ(adapter_for_type("opena"), nullptr);
}

}  // namespace
}  // namespace dispatch::worker::test
