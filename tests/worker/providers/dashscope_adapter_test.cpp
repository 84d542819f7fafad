#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "providers_test_support.hpp"

namespace dispatch::worker::test {
namespace {

using protocol::ErrorKind;

Result<BuiltRequest, Failure> build(const protocol::Request& request, bool stream = true,
                                    const ProviderConfig& provider = make_provider("dashscope")) {
  return adapter("dashscope").build(request, "qwen-plus", stream, provider);
}

TEST(DashScopeBuild, RichRequest) {
  ProviderConfig provider = make_provider("dashscope");
  provider.base_url = "https://dashscope.aliyuncs.com/api/v1";
  auto result = build(rich_request(/*with_image=*/false), true, provider);
  ASSERT_TRUE(result.ok()) << result.error().message;
  const BuiltRequest& built = result.value();
  const Json expected = Json::parse(R"({
    "model":"qwen-plus",
    "input":{"messages":[
      {"role":"system","content":"You are terse."},
      {"role":"user","content":"What is in this image?"},
      {"role":"assistant","content":"","tool_calls":[
        {"id":"call_1","type":"function","index":0,"function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},
        {"id":"call_2","type":"function","index":1,"function":{"name":"get_time","arguments":"{}"}}]},
      {"role":"tool","content":"sunny","tool_call_id":"call_1","name":"get_weather"},
      {"role":"tool","content":"noon","tool_call_id":"call_2","name":"get_time"},
      {"role":"user","content":"thanks"}]},
    "parameters":{
      "result_format":"message","incremental_output":true,"max_tokens":100,"temperature":1.5,
      "top_p":0.9,"stop":["END"],"tool_choice":"auto","enable_thinking":true,"thinking_budget":2048,
      "tools":[
        {"type":"function","function":{"name":"get_weather","description":"Weather for a city",
          "parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}},
        {"type":"function","function":{"name":"get_time","parameters":{"type":"object","properties":{}}}}]}
  })");
  EXPECT_EQ(built_body(built), expected) << built_body(built).dump(2);
  EXPECT_EQ(built.http.url,
            "https://dashscope.aliyuncs.com/api/v1/services/aigc/text-generation/generation");
  EXPECT_EQ(header_value(built.http.headers, "Authorization"), "Bearer sk-test-key-123456");
  EXPECT_EQ(header_value(built.http.headers, "X-DashScope-SSE"), "enable");
  EXPECT_EQ(header_value(built.http.headers, "Accept"), "text/event-stream");
  EXPECT_TRUE(built.notes.empty());
}

TEST(DashScopeBuild, NonStreamAndTemperatureClamp) {
  protocol::Request request;
  request.messages = {{"user", "hi", "", {}, {}, "", ""}};
  request.temperature = 2.0;
  request.response_format = "json_object";
  auto result = build(request, false);
  ASSERT_TRUE(result.ok());
  const BuiltRequest& built = result.value();
  EXPECT_EQ(built_body(built)["parameters"],
            Json::parse(R"({"result_format":"message","temperature":1.99,
                            "response_format":{"type":"json_object"}})"));
  EXPECT_EQ(built.notes,
            std::vector<std::string>{"temperature 2.0 clamped to 1.99 (dashscope range [0, 2))"});
  EXPECT_EQ(header_value(built.http.headers, "X-DashScope-SSE"), "<absent>");
}

TEST(DashScopeBuild, Failures) {
  protocol::Request request = rich_request(/*with_image=*/true);
  auto result = build(request);
  ASSERT_TRUE(!result.ok());
  EXPECT_EQ(result.error().kind, ErrorKind::invalid_request);
  EXPECT_THAT(result.error().message,
              ::testing::StartsWith("messages[1]: images are not supported"));
  ProviderConfig keyless = make_provider("dashscope", "");
  keyless.api_key_env = "DASHSCOPE_API_KEY";
  result = build(rich_request(false), true, keyless);
  EXPECT_EQ(result.error().kind, ErrorKind::authentication);
  EXPECT_EQ(result.error().message, "no API key: set DASHSCOPE_API_KEY");
}

std::string event(int id, const std::string& data, const std::string& name = "result",
                  int status = 200) {
  return "id:" + std::to_string(id) + "\nevent:" + name + "\n:HTTP_STATUS/" +
         std::to_string(status) + "\ndata:" + data + "\n\n";
}

const std::string kStream = joined({
    event(
        1,
        R"({"output":{"choices":[{"message":{"content":"","reasoning_content":"Think","role":"assistant"},"finish_reason":"null"}]},"usage":{"total_tokens":12,"input_tokens":10,"output_tokens":2},"request_id":"req-1"})"),
    event(
        2,
        R"({"output":{"choices":[{"message":{"content":"Hi ✓","role":"assistant"},"finish_reason":"null"}]},"usage":{"total_tokens":13,"input_tokens":10,"output_tokens":3},"request_id":"req-1"})"),
    event(
        3,
        R"({"output":{"choices":[{"message":{"content":"","role":"assistant","tool_calls":[{"index":0,"id":"call_x","type":"function","function":{"name":"get_weather","arguments":"{\"city\":"}}]},"finish_reason":"null"}]},"usage":{"total_tokens":15,"input_tokens":10,"output_tokens":5},"request_id":"req-1"})"),
    event(
        4,
        R"({"output":{"choices":[{"message":{"content":"","role":"assistant","tool_calls":[{"index":0,"id":"","type":"function","function":{"arguments":"\"Paris\"}"}}]},"finish_reason":"null"}]},"usage":{"total_tokens":17,"input_tokens":10,"output_tokens":7},"request_id":"req-1"})"),
    event(
        5,
        R"({"output":{"choices":[{"message":{"content":"","role":"assistant"},"finish_reason":"tool_calls"}]},"usage":{"total_tokens":19,"input_tokens":10,"output_tokens":9},"request_id":"req-1"})"),
});

TEST(DashScopeDecode, StreamAtEveryByteBoundary) {
  const HttpHeaders headers = {{"content-type", "text/event-stream;charset=UTF-8"}};
  const Decoded whole = decode(adapter("dashscope"), true, 200, headers, kStream);
  EXPECT_EQ(whole.thinking, "Think");
  EXPECT_EQ(whole.content, "Hi ✓");
  ASSERT_EQ(whole.tool_calls.size(), 1u);
  EXPECT_EQ(whole.tool_calls.at(0),
            (protocol::ToolCall{"call_x", "get_weather", R"({"city":"Paris"})"}));
  EXPECT_EQ(whole.prompt_tokens, 10u);
  EXPECT_EQ(whole.completion_tokens, 9u);  // cumulative: the last event wins
  EXPECT_EQ(whole.finish, "tool_calls");
  EXPECT_EQ(whole.request_id, "req-1");
  EXPECT_EQ(whole.terminators, 1);  // the event whose finish_reason is not "null"
  expect_same_at_every_split(adapter("dashscope"), headers, kStream, whole);
}

TEST(DashScopeDecode, NullFinishIsNotFinished) {
  const Decoded d = decode(
      adapter("dashscope"), true, 200, {},
      event(
          1,
          R"({"output":{"choices":[{"message":{"content":"a"},"finish_reason":"null"}]},"request_id":"r"})"));
  EXPECT_EQ(d.finish, "");
  EXPECT_EQ(d.terminators, 0);
}

TEST(DashScopeDecode, ErrorEventInStream) {
  const std::string body = joined(
      {event(
           1,
           R"({"output":{"choices":[{"message":{"content":"a"},"finish_reason":"null"}]},"request_id":"r"})"),
       event(
           2,
           R"({"code":"Throttling.RateQuota","message":"Requests rate limit exceeded","request_id":"r"})",
           "error", 429)});
  const Decoded d = decode(adapter("dashscope"), true, 200, {}, body);
  ASSERT_TRUE(d.stream_error);
  EXPECT_EQ(d.stream_error->kind, ErrorKind::rate_limited);
  EXPECT_EQ(d.stream_error->code, "Throttling.RateQuota");
}

TEST(DashScopeDecode, WholeBodyAndTextFormat) {
  Decoded d = decode(
      adapter("dashscope"), false, 200, {},
      R"({"output":{"choices":[{"finish_reason":"length","message":{"role":"assistant","content":"Hello"}}]},"usage":{"input_tokens":4,"output_tokens":1,"total_tokens":5},"request_id":"uuid-1"})");
  EXPECT_EQ(d.content, "Hello");
  EXPECT_EQ(d.finish, "length");
  EXPECT_EQ(d.prompt_tokens, 4u);
  EXPECT_EQ(d.request_id, "uuid-1");
  d = decode(
      adapter("dashscope"), false, 200, {},
      R"({"output":{"text":"plain","finish_reason":"stop"},"usage":{"input_tokens":1,"output_tokens":1},"request_id":"u"})");
  EXPECT_EQ(d.content, "plain");
  EXPECT_EQ(d.finish, "stop");
}

TEST(DashScopeDecode, ErrorBodies) {
  Decoded d =
      decode(adapter("dashscope"), false, 401, {},
             R"({"code":"InvalidApiKey","message":"Invalid API-key provided.","request_id":"r"})");
  EXPECT_EQ(d.finish_failure->kind, ErrorKind::authentication);
  EXPECT_EQ(d.finish_failure->code, "InvalidApiKey");
  d = decode(
      adapter("dashscope"), false, 400, {},
      R"({"code":"DataInspectionFailed","message":"Input data may contain inappropriate content.","request_id":"r"})");
  EXPECT_EQ(d.finish_failure->kind, ErrorKind::content_filtered);
  d = decode(
      adapter("dashscope"), false, 400, {},
      R"({"code":"Arrearage","message":"Access denied, please make sure your account is in good standing.","request_id":"r"})");
  EXPECT_EQ(d.finish_failure->kind, ErrorKind::rate_limited);
  EXPECT_FALSE(d.finish_failure->should_retry);
  EXPECT_TRUE(d.finish_failure->should_retry_header);
  d = decode(
      adapter("dashscope"), false, 400, {},
      R"({"code":"InvalidParameter","message":"Range of input length should be [1, 30720]","request_id":"r"})");
  EXPECT_EQ(d.finish_failure->kind, ErrorKind::context_length_exceeded);
  d = decode(adapter("dashscope"), true, 500, {},
             R"({"code":"InternalError","message":"oops","request_id":"r"})");
  EXPECT_EQ(d.finish_failure->kind, ErrorKind::server_error);
}

}  // namespace
}  // namespace dispatch::worker::test
