#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "providers_test_support.hpp"

namespace dispatch::worker::test {
namespace {

using protocol::ErrorKind;

Result<BuiltRequest, Failure> build(const protocol::Request& request,
                                    const ProviderConfig& provider, bool stream = true) {
  return adapter("anthropic").build(request, "claude-x", stream, provider);
}

Json expected_messages() {
  return Json::parse(joined({R"([
    {"role":"user","content":[
      {"type":"image","source":{"type":"base64","media_type":"image/png","data":")",
                             kPngBase64, R"("}},
      {"type":"text","text":"What is in this image?"}]},
    {"role":"assistant","content":[
      {"type":"tool_use","id":"call_1","name":"get_weather","input":{"city":"Paris"}},
      {"type":"tool_use","id":"call_2","name":"get_time","input":{}}]},
    {"role":"user","content":[
      {"type":"tool_result","tool_use_id":"call_1","content":"sunny"},
      {"type":"tool_result","tool_use_id":"call_2","content":"noon"},
      {"type":"text","text":"thanks"}]}])"}));
}

Json expected_tools() {
  return Json::array({{{"name", "get_weather"},
                       {"description", "Weather for a city"},
                       {"input_schema", weather_schema()}},
                      {{"name", "get_time"},
                       {"input_schema", {{"type", "object"}, {"properties", Json::object()}}}}});
}

TEST(AnthropicBuild, RichRequestClampsTemperature) {
  protocol::Request request = rich_request();
  request.think.reset();
  ProviderConfig provider = make_provider("anthropic");
  provider.base_url = "https://api.anthropic.example";
  auto result = build(request, provider);
  ASSERT_TRUE(result.ok()) << result.error().message;
  const BuiltRequest& built = result.value();
  const Json expected = {{"model", "claude-x"},
                         {"max_tokens", 100},
                         {"system", "You are terse."},
                         {"messages", expected_messages()},
                         {"stream", true},
                         {"temperature", 1.0},
                         {"top_p", 0.9},
                         {"stop_sequences", {"END"}},
                         {"tools", expected_tools()},
                         {"tool_choice", {{"type", "auto"}}}};
  EXPECT_EQ(built_body(built), expected) << built_body(built).dump(2);
  EXPECT_EQ(built.notes,
            std::vector<std::string>{"temperature 1.5 clamped to 1.0 (anthropic range 0–1)"});
  EXPECT_EQ(built.http.url, "https://api.anthropic.example/v1/messages");
  EXPECT_EQ(header_value(built.http.headers, "x-api-key"), "sk-test-key-123456");
  EXPECT_EQ(header_value(built.http.headers, "anthropic-version"), "2023-06-01");
  EXPECT_EQ(header_value(built.http.headers, "Authorization"), "<absent>");
}

TEST(AnthropicBuild, ThinkingAndDefaultMaxTokens) {
  protocol::Request request = rich_request();
  request.max_tokens.reset();
  ProviderConfig provider = make_provider("anthropic");
  provider.default_max_tokens = 8000;
  auto result = build(request, provider, false);
  ASSERT_TRUE(result.ok()) << result.error().message;
  const BuiltRequest& built = result.value();
  const Json body = built_body(built);
  EXPECT_EQ(body["max_tokens"], 8000);
  EXPECT_EQ(body["thinking"], Json::parse(R"({"type":"enabled","budget_tokens":2048})"));
  EXPECT_FALSE(body.contains("temperature"));  // the API rejects one with thinking
  EXPECT_FALSE(body.contains("stream"));
  EXPECT_EQ(built.notes, std::vector<std::string>{
                             "temperature not sent (anthropic thinking requires the default)"});

  request.thinking_budget = 9000;
  auto failure = build(request, provider);
  ASSERT_TRUE(!failure.ok());
  EXPECT_EQ(failure.error().message,
            "thinking_budget: 9000 must be below max_tokens (8000) for anthropic");
}

TEST(AnthropicBuild, SystemBlocksToolChoiceAndImageTypes) {
  protocol::Request request;
  request.messages = {
      {"system", "one", "", {}, {}, "", ""},
      {"system", "two", "", {}, {}, "", ""},
      {"user", "", "", {std::string(kJpegBase64), std::string(kWebpBase64)}, {}, "", ""}};
  request.tools = {{"f", "", ""}};
  request.tool_choice = "required";
  auto result = build(request, make_provider("anthropic"));
  ASSERT_TRUE(result.ok());
  Json body = built_body(result.value());
  EXPECT_EQ(body["system"],
            Json::parse(R"([{"type":"text","text":"one"},{"type":"text","text":"two"}])"));
  EXPECT_EQ(body["max_tokens"], 4096);  // the documented default
  EXPECT_EQ(body["tool_choice"], Json::parse(R"({"type":"any"})"));
  EXPECT_EQ(body["messages"][0]["content"][0]["source"]["media_type"], "image/jpeg");
  EXPECT_EQ(body["messages"][0]["content"][1]["source"]["media_type"], "image/webp");
  EXPECT_EQ(body["messages"][0]["content"].size(), 2u);  // no empty text block

  request.tool_choice = "function";
  request.tool_choice_function = "f";
  body = built_body(build(request, make_provider("anthropic")).value());
  EXPECT_EQ(body["tool_choice"], Json::parse(R"({"type":"tool","name":"f"})"));
  request.tool_choice = "none";
  body = built_body(build(request, make_provider("anthropic")).value());
  EXPECT_EQ(body["tool_choice"], Json::parse(R"({"type":"none"})"));
}

TEST(AnthropicBuild, Failures) {
  protocol::Request request;
  request.messages = {{"user", "hi", "", {}, {}, "", ""}};
  ProviderConfig keyless = make_provider("anthropic", "");
  keyless.api_key_env = "ANTHROPIC_API_KEY";
  auto result = build(request, keyless);
  ASSERT_TRUE(!result.ok());
  EXPECT_EQ(result.error().kind, ErrorKind::authentication);
  EXPECT_EQ(result.error().message, "no API key: set ANTHROPIC_API_KEY");

  request.response_format = "json_object";
  result = build(request, make_provider("anthropic"));
  EXPECT_EQ(result.error().message, "response_format: 'json_object' is not supported by anthropic");

  request.response_format.clear();
  request.messages.push_back({"assistant", "", "", {}, {{"id1", "f", "[1,2]"}}, "", ""});
  result = build(request, make_provider("anthropic"));
  EXPECT_EQ(result.error().kind, ErrorKind::invalid_request);
  EXPECT_EQ(result.error().message, "messages[1].tool_calls[0].arguments: must be a JSON object");

  request.messages = {{"system", "only a system prompt", "", {}, {}, "", ""}};
  result = build(request, make_provider("anthropic"));
  EXPECT_EQ(result.error().message, "messages: no user or assistant message");
}

const std::string kStream = joined({
    "event: message_start\n",
    R"(data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-x-2025","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"output_tokens":1}}})",
    "\n\n",
    "event: content_block_start\n",
    R"(data: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}})",
    "\n\n",
    "event: content_block_delta\n",
    R"(data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Hmm."}})",
    "\n\n",
    "event: content_block_delta\n",
    R"(data: {"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"abc"}})",
    "\n\n",
    "event: content_block_stop\n",
    R"(data: {"type":"content_block_stop","index":0})",
    "\n\n",
    "event: ping\n",
    R"(data: {"type": "ping"})",
    "\n\n",
    "event: content_block_start\n",
    R"(data: {"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}})",
    "\n\n",
    "event: content_block_delta\n",
    R"(data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Hello"}})",
    "\n\n",
    "event: content_block_stop\n",
    R"(data: {"type":"content_block_stop","index":1})",
    "\n\n",
    "event: content_block_start\n",
    R"(data: {"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{}}})",
    "\n\n",
    "event: content_block_delta\n",
    R"(data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":""}})",
    "\n\n",
    "event: content_block_delta\n",
    R"(data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"city\": \"Pa"}})",
    "\n\n",
    "event: content_block_delta\n",
    R"(data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"ris\"}"}})",
    "\n\n",
    "event: content_block_stop\n",
    R"(data: {"type":"content_block_stop","index":2})",
    "\n\n",
    "event: content_block_start\n",
    R"(data: {"type":"content_block_start","index":3,"content_block":{"type":"tool_use","id":"toolu_2","name":"get_time","input":{}}})",
    "\n\n",
    "event: content_block_stop\n",
    R"(data: {"type":"content_block_stop","index":3})",
    "\n\n",
    "event: some_future_event\n",
    R"(data: {"type":"some_future_event","x":1})",
    "\n\n",
    "event: message_delta\n",
    R"(data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":15}})",
    "\n\n",
    "event: message_stop\n",
    R"(data: {"type":"message_stop"})",
    "\n\n",
});

TEST(AnthropicDecode, StreamAtEveryByteBoundary) {
  const HttpHeaders headers = {{"content-type", "text/event-stream"}, {"request-id", "req_011"}};
  const Decoded whole = decode(adapter("anthropic"), true, 200, headers, kStream);
  EXPECT_EQ(whole.thinking, "Hmm.");
  EXPECT_EQ(whole.content, "Hello");
  ASSERT_EQ(whole.tool_calls.size(), 2u);
  EXPECT_EQ(whole.tool_calls.at(0),
            (protocol::ToolCall{"toolu_1", "get_weather", R"({"city": "Paris"})"}));
  EXPECT_EQ(whole.tool_calls.at(1), (protocol::ToolCall{"toolu_2", "get_time", "{}"}));
  EXPECT_EQ(whole.prompt_tokens, 25u);
  EXPECT_EQ(whole.completion_tokens, 15u);
  EXPECT_EQ(whole.finish, "tool_calls");
  EXPECT_EQ(whole.raw_finish, "tool_use");
  EXPECT_EQ(whole.request_id, "msg_1");
  EXPECT_EQ(whole.model, "claude-x-2025");
  EXPECT_EQ(whole.created_at, 0);  // Anthropic sends none; the policy fills in now
  EXPECT_EQ(whole.terminators, 1);
  EXPECT_EQ(whole.malformed, 0);
  expect_same_at_every_split(adapter("anthropic"), headers, kStream, whole);
}

TEST(AnthropicDecode, FinishReasons) {
  for (const auto& [raw, normalised] :
       std::vector<std::pair<std::string, std::string>>{{"end_turn", "stop"},
                                                        {"stop_sequence", "stop"},
                                                        {"max_tokens", "length"},
                                                        {"tool_use", "tool_calls"},
                                                        {"refusal", "content_filter"},
                                                        {"model_context_window_exceeded", "length"},
                                                        {"pause_turn", "stop"}}) {
    const std::string body =
        R"({"id":"m","type":"message","model":"c","content":[{"type":"text","text":"x"}],"stop_reason":")" +
        raw + R"(","usage":{"input_tokens":1,"output_tokens":2}})";
    const Decoded d = decode(adapter("anthropic"), false, 200, {}, body);
    EXPECT_EQ(d.finish, normalised) << raw;
    EXPECT_EQ(d.raw_finish, raw);
  }
}

TEST(AnthropicDecode, WholeBody) {
  const std::string body = R"({"id":"msg_2","type":"message","role":"assistant","model":"claude-x",
    "content":[{"type":"thinking","thinking":"hm","signature":"s"},{"type":"text","text":"Hi"},
    {"type":"tool_use","id":"toolu_9","name":"f","input":{"a":[1,2]}}],
    "stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":9,"output_tokens":4}})";
  const Decoded d = decode(adapter("anthropic"), false, 200, {{"request-id", "req_h"}}, body);
  EXPECT_EQ(d.thinking, "hm");
  EXPECT_EQ(d.content, "Hi");
  EXPECT_EQ(d.tool_calls.at(0), (protocol::ToolCall{"toolu_9", "f", R"({"a":[1,2]})"}));
  EXPECT_EQ(d.prompt_tokens, 9u);
  EXPECT_EQ(d.completion_tokens, 4u);
  EXPECT_EQ(d.request_id, "msg_2");
}

// Anthropic counts cache reads and writes apart from input_tokens: the prompt is all three,
// the reads its cached part.
TEST(AnthropicDecode, CacheReadsAndWritesArePartOfThePrompt) {
  const std::string body = R"({"id":"msg_c","type":"message","model":"claude-x",
    "content":[{"type":"text","text":"Hi"}],"stop_reason":"end_turn","usage":{"input_tokens":10,
    "cache_creation_input_tokens":200,"cache_read_input_tokens":3000,"output_tokens":4}})";
  const Decoded d = decode(adapter("anthropic"), false, 200, {}, body);
  EXPECT_EQ(d.prompt_tokens, 3210u);
  EXPECT_EQ(d.cached_tokens, 3000u);
  EXPECT_EQ(d.completion_tokens, 4u);

  const std::string stream =
      "event: message_start\n"
      R"(data: {"type":"message_start","message":{"id":"m","model":"c","usage":{"input_tokens":5,"cache_read_input_tokens":700,"output_tokens":1}}})"
      "\n\nevent: content_block_start\n"
      R"(data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})"
      "\n\nevent: content_block_delta\n"
      R"(data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}})"
      "\n\nevent: content_block_stop\n"
      R"(data: {"type":"content_block_stop","index":0})"
      "\n\nevent: message_delta\n"
      R"(data: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":9}})"
      "\n\nevent: message_stop\n"
      R"(data: {"type":"message_stop"})"
      "\n\n";
  const Decoded streamed = decode(adapter("anthropic"), true, 200, {}, stream);
  EXPECT_EQ(streamed.prompt_tokens, 705u);
  EXPECT_EQ(streamed.cached_tokens, 700u);
  EXPECT_EQ(streamed.completion_tokens, 9u);
}

// Found by fuzzing (tests/fuzz/corpus/adapters/crash-usage-1e42): converting a count beyond
// uint64 to an integer was undefined behaviour. Such a count, or a block index, is ignored.
TEST(AnthropicDecode, CountsBeyondUint64AreIgnored) {
  const std::string body = R"({"id":"m","type":"message","model":"c",
    "content":[{"type":"text","text":"x"}],"stop_reason":"end_turn",
    "usage":{"input_tokens":12.0,"output_tokens":1e42}})";
  const Decoded whole = decode(adapter("anthropic"), false, 200, {}, body);
  EXPECT_EQ(whole.content, "x");
  EXPECT_EQ(whole.prompt_tokens, 12u);
  EXPECT_EQ(whole.completion_tokens, 0u);

  // A dashscope-shaped count written as a 43-digit integer was the fuzzer's input: JSON readers
  // take it as a double.
  const std::string stream = joined(
      {"event: message_start\n",
       R"(data: {"type":"message_start","message":{"id":"m","model":"c","usage":{"input_tokens":1111111111111111111111111111111111111111113,"output_tokens":1}}})",
       "\n\nevent: content_block_start\n",
       R"(data: {"type":"content_block_start","index":1e42,"content_block":{"type":"text","text":""}})",
       "\n\nevent: content_block_delta\n",
       R"(data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}})",
       "\n\nevent: message_delta\n",
       R"(data: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":1.8446744073709552e19}})",
       "\n\nevent: message_stop\n", R"(data: {"type":"message_stop"})", "\n\n"});
  const Decoded streamed =
      decode(adapter("anthropic"), true, 200, {{"content-type", "text/event-stream"}}, stream);
  EXPECT_EQ(streamed.content, "Hi");
  EXPECT_EQ(streamed.prompt_tokens, 0u);
  EXPECT_EQ(streamed.completion_tokens, 1u) << "the out-of-range update is ignored";
  EXPECT_EQ(streamed.malformed, 1) << "the block start without a usable index";
  EXPECT_EQ(streamed.terminators, 1);
}

// 100,000 nested objects in a tool_use input overflowed the worker's stack when the input was
// serialised (nlohmann's dump and JsonValue::to_json recurse): now the answer is unparsable.
TEST(AnthropicDecode, AnswerNestedTooDeeplyIsRefusedNotACrash) {
  constexpr std::size_t kDepth = 100000;
  std::string deep;
  for (std::size_t i = 0; i < kDepth; ++i) deep += "{\"a\":";
  deep += "1" + std::string(kDepth, '}');
  const std::string whole =
      R"({"id":"m","type":"message","model":"c","content":[{"type":"tool_use","id":"t","name":"f","input":)" +
      deep + R"(}],"stop_reason":"tool_use"})";
  const Decoded d = decode(adapter("anthropic"), false, 200, {}, whole);
  ASSERT_TRUE(d.finish_failure);
  EXPECT_EQ(d.finish_failure->kind, ErrorKind::server_error);
  EXPECT_TRUE(d.tool_calls.empty());

  const std::string stream = joined(
      {"event: content_block_start\n",
       R"(data: {"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"t","name":"f","input":)",
       deep, "}}\n\n", "event: message_stop\n", R"(data: {"type":"message_stop"})", "\n\n"});
  const Decoded s =
      decode(adapter("anthropic"), true, 200, {{"content-type", "text/event-stream"}}, stream);
  EXPECT_EQ(s.malformed, 1);
  EXPECT_TRUE(s.tool_calls.empty());
}

// The same from the client's side: tool arguments nested too deeply are refused, not serialised.
TEST(AnthropicBuild, ArgumentsNestedTooDeeplyAreRefused) {
  protocol::Request request;
  request.messages = {{"user", "hi", "", {}, {}, "", ""}};
  std::string deep;
  for (std::size_t i = 0; i < 100000; ++i) deep += "{\"a\":";
  deep += "1" + std::string(100000, '}');
  request.messages.push_back({"assistant", "", "", {}, {{"id1", "f", deep}}, "", ""});
  const auto result = build(request, make_provider("anthropic"));
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().kind, ErrorKind::invalid_request);
  EXPECT_EQ(result.error().message,
            "messages[1].tool_calls[0].arguments: JSON nested deeper than 256 levels");
}

TEST(AnthropicDecode, ErrorEventAfter200) {
  const std::string body = joined(
      {"event: content_block_delta\n",
       R"(data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hel"}})",
       "\n\nevent: error\n",
       R"(data: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}})",
       "\n\n"});
  const Decoded d = decode(adapter("anthropic"), true, 200, {}, body);
  ASSERT_TRUE(d.stream_error);
  EXPECT_EQ(d.stream_error->kind, ErrorKind::overloaded);
  EXPECT_EQ(d.stream_error->code, "overloaded_error");
  EXPECT_EQ(d.stream_error->message, "Overloaded");
}

TEST(AnthropicDecode, MalformedEventsAreSkipped) {
  const std::string body = joined(
      {"event: content_block_delta\ndata: {oops\n\n", "event: content_block_delta\n",
       R"(data: {"type":"content_block_delta","delta":{"type":"text_delta","text":"no index"}})",
       "\n\nevent: content_block_delta\n",
       R"(data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"ok"}})",
       "\n\nevent: message_stop\n", R"(data: {"type":"message_stop"})", "\n\n"});
  const Decoded d = decode(adapter("anthropic"), true, 200, {}, body);
  EXPECT_EQ(d.malformed, 2);
  EXPECT_EQ(d.content, "ok");
  EXPECT_EQ(d.terminators, 1);
}

TEST(AnthropicDecode, ErrorBodies) {
  Decoded d = decode(
      adapter("anthropic"), true, 529, {},
      R"({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_1"})");
  EXPECT_EQ(d.finish_failure->kind, ErrorKind::overloaded);
  d = decode(adapter("anthropic"), true, 429, {{"retry-after", "12"}},
             R"({"type":"error","error":{"type":"rate_limit_error","message":"slow down"}})");
  EXPECT_EQ(d.finish_failure->kind, ErrorKind::rate_limited);
  EXPECT_EQ(d.finish_failure->retry_after_ms, 12000u);
  d = decode(
      adapter("anthropic"), true, 400, {},
      R"({"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}})");
  EXPECT_EQ(d.finish_failure->kind, ErrorKind::context_length_exceeded);
  d = decode(adapter("anthropic"), true, 404, {},
             R"({"type":"error","error":{"type":"not_found_error","message":"model: nope"}})");
  EXPECT_EQ(d.finish_failure->kind, ErrorKind::model_not_available);
  EXPECT_EQ(d.finish_failure->code, "not_found_error");
}

}  // namespace
}  // namespace dispatch::worker::test
