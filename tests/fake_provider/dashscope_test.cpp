// DashScope conformance: native text generation and the OpenAI-compatible mode.

#include "http_client.hpp"

namespace dispatch::fake_provider::test {
namespace {

class DashScope : public FakeProviderTest {};

json native(const std::string& model, json messages, json parameters = json::object()) {
  return json{{"model", model},
              {"input", {{"messages", std::move(messages)}}},
              {"parameters", std::move(parameters)}};
}

json weather_tools() {
  return json{
      {{"type", "function"},
       {"function",
        {{"name", "get_weather"},
         {"parameters", {{"type", "object"}, {"properties", {{"city", {{"type", "string"}}}}}}}}}}};
}

TEST_F(DashScope, NativeMessageFormat) {
  const HttpResult r =
      dashscope(native("qwen-plus", {user("ni hao")}, {{"result_format", "message"}}), false);
  ASSERT_EQ(r.status, 200) << r.body;
  const json j = r.json_body();
  EXPECT_EQ(j["output"]["choices"][0]["message"],
            (json{{"role", "assistant"}, {"content", "reply to: ni hao lorem ipsum dolor sit"}}));
  EXPECT_EQ(j["output"]["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(j["usage"], (json{{"input_tokens", 2}, {"output_tokens", 8}, {"total_tokens", 10}}));
  EXPECT_TRUE(j["request_id"].is_string());
  EXPECT_EQ(j["request_id"].get<std::string>().size(), 36u);
  EXPECT_FALSE(j.contains("id"));
  EXPECT_FALSE(j.contains("created"));
}

TEST_F(DashScope, NativeTextFormat) {
  const json j =
      dashscope(native("qwen-plus~tokens=3", {user("x")}, {{"result_format", "text"}}), false)
          .json_body();
  EXPECT_EQ(j["output"], (json{{"text", "reply to: x"}, {"finish_reason", "stop"}}));
}

TEST_F(DashScope, NativeIncrementalStreamFraming) {
  const json body = native("qwen-plus~tokens=3", {user("go")},
                           {{"result_format", "message"}, {"incremental_output", true}});
  const HttpResult r = dashscope(body, true);
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.header("content-type"), "text/event-stream;charset=UTF-8");
  // Exact framing of the first event: no space after any colon.
  EXPECT_EQ(r.body.rfind("id:1\nevent:result\n:HTTP_STATUS/200\ndata:{", 0), 0u) << r.body;
  EXPECT_EQ(r.body.find("[DONE]"), std::string::npos);
  const auto events = parse_sse(r.body);
  ASSERT_EQ(events.size(), 4u);
  std::string text;
  for (size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].id, std::to_string(i + 1));
    EXPECT_EQ(events[i].event, "result");
    EXPECT_EQ(events[i].comments, (std::vector<std::string>{"HTTP_STATUS/200"}));
    const json data = json::parse(events[i].data);
    const json& choice = data["output"]["choices"][0];
    text += choice["message"]["content"].get<std::string>();
    const bool last = i + 1 == events.size();
    EXPECT_EQ(choice["finish_reason"], last ? "stop" : "null");
    EXPECT_EQ(data["usage"]["input_tokens"], 1);
    EXPECT_EQ(data["usage"]["output_tokens"], last ? 3 : static_cast<int>(i + 1));
    EXPECT_EQ(data["usage"]["total_tokens"],
              data["usage"]["input_tokens"].get<int>() + data["usage"]["output_tokens"].get<int>());
  }
  EXPECT_EQ(text, "reply to: go");
}

TEST_F(DashScope, NativeNonIncrementalStreamRepeatsTheWholeText) {
  const auto events = parse_sse(
      dashscope(native("qwen-plus~tokens=3", {user("go")}, {{"result_format", "text"}}), true)
          .body);
  ASSERT_EQ(events.size(), 4u);
  EXPECT_EQ(json::parse(events[0].data)["output"]["text"], "reply ");
  EXPECT_EQ(json::parse(events[1].data)["output"]["text"], "reply to: ");
  EXPECT_EQ(json::parse(events[3].data)["output"],
            (json{{"text", "reply to: go"}, {"finish_reason", "stop"}}));
}

TEST_F(DashScope, NativeAcceptHeaderAlsoStreams) {
  const HttpResult r =
      dashscope(native("qwen-plus~tokens=1", {user("x")}), false, {"Accept: text/event-stream"});
  EXPECT_EQ(r.body.rfind("id:1\n", 0), 0u);
}

TEST_F(DashScope, NativeToolCalls) {
  json parameters{{"result_format", "message"}, {"tools", weather_tools()}};
  const json j =
      dashscope(native("qwen-plus", {user("use get_weather")}, parameters), false).json_body();
  const json& choice = j["output"]["choices"][0];
  EXPECT_EQ(choice["finish_reason"], "tool_calls");
  const json& call = choice["message"]["tool_calls"][0];
  EXPECT_EQ(call["index"], 0);
  EXPECT_EQ(call["type"], "function");
  EXPECT_EQ(call["function"]["name"], "get_weather");
  EXPECT_EQ(json::parse(call["function"]["arguments"].get<std::string>()),
            (json{{"city", "fake-city"}}));

  parameters["incremental_output"] = true;
  const auto events =
      parse_sse(dashscope(native("qwen-plus", {user("use get_weather")}, parameters), true).body);
  std::string name;
  std::string arguments;
  int fragments = 0;
  for (const auto& e : events) {
    const json data = json::parse(e.data);
    const json& message = data["output"]["choices"][0]["message"];
    if (!message.contains("tool_calls")) continue;
    const json& delta = message["tool_calls"][0];
    EXPECT_EQ(delta["index"], 0);
    if (delta["function"].contains("name")) name += delta["function"]["name"].get<std::string>();
    arguments += delta["function"]["arguments"].get<std::string>();
    ++fragments;
  }
  EXPECT_EQ(name, "get_weather");
  EXPECT_GE(fragments, 3);
  EXPECT_EQ(json::parse(arguments), (json{{"city", "fake-city"}}));
  EXPECT_EQ(json::parse(events.back().data)["output"]["choices"][0]["finish_reason"], "tool_calls");
}

TEST_F(DashScope, NativeThinkingStreamsReasoningContent) {
  const json body = native(
      "qwen3-max~tokens=2", {user("x")},
      {{"result_format", "message"}, {"incremental_output", true}, {"enable_thinking", true}});
  const auto events = parse_sse(dashscope(body, true).body);
  std::string reasoning;
  std::string content;
  for (const auto& e : events) {
    const json data = json::parse(e.data);
    const json& message = data["output"]["choices"][0]["message"];
    reasoning += message.value("reasoning_content", "");
    content += message["content"].get<std::string>();
  }
  EXPECT_FALSE(reasoning.empty());
  EXPECT_EQ(content, "reply to:");
  // Thinking is refused on non-streamed calls, as the real API does.
  EXPECT_EQ(dashscope(body, false).status, 400);
}

TEST_F(DashScope, NativeLimitsStopAndImages) {
  json j = dashscope(native("q", {user("a b")}, {{"result_format", "message"}, {"max_tokens", 3}}),
                     false)
               .json_body();
  EXPECT_EQ(j["output"]["choices"][0]["message"]["content"], "reply to: a");
  EXPECT_EQ(j["output"]["choices"][0]["finish_reason"], "length");
  j = dashscope(native("q", {user("a b")}, {{"result_format", "message"}, {"stop", {"b"}}}), false)
          .json_body();
  EXPECT_EQ(j["output"]["choices"][0]["message"]["content"], "reply to: a ");
  EXPECT_EQ(j["output"]["choices"][0]["finish_reason"], "stop");
  const json content{{{"image", "https://example.com/x.png"}}, {{"text", "what"}}};
  j = dashscope(native("q~tokens=5", {{{"role", "user"}, {"content", content}}},
                       {{"result_format", "message"}}),
                false)
          .json_body();
  EXPECT_EQ(j["output"]["choices"][0]["message"]["content"], "[1 images] reply to: what");
}

TEST_F(DashScope, NativeErrorsAreFlat) {
  HttpResult r = perform({"POST",
                          url("/api/v1/services/aigc/text-generation/generation"),
                          {},
                          native("q", {user("x")}).dump(),
                          5000});
  EXPECT_EQ(r.status, 401);
  json j = r.json_body();
  EXPECT_EQ(j["code"], "InvalidApiKey");
  EXPECT_TRUE(j["message"].is_string());
  EXPECT_TRUE(j["request_id"].is_string());
  EXPECT_EQ(j.size(), 3u);

  r = dashscope(json{{"model", "q"}, {"input", json::object()}}, false);
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.json_body()["code"], "InvalidParameter");

  r = dashscope(native("q", {user("x")}, {{"temperature", 2.0}}), false);
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.json_body()["code"], "InvalidParameter");

  const json bad_call{{"role", "assistant"},
                      {"content", ""},
                      {"tool_calls",
                       {{{"id", "c"},
                         {"type", "function"},
                         {"function", {{"name", "f"}, {"arguments", {{"a", 1}}}}}}}}};
  r = dashscope(native("q", {user("x"), bad_call, {{"role", "tool"}, {"content", "r"}}}), false);
  EXPECT_EQ(r.status, 400);

  r = dashscope(native("no-such-model", {user("x")}), false);
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.json_body()["code"], "ModelNotFound");
}

TEST_F(DashScope, CompatibleModeReply) {
  const HttpResult r = compatible({{"model", "qwen-plus~tokens=3"}, {"messages", {user("x")}}});
  ASSERT_EQ(r.status, 200) << r.body;
  const json j = r.json_body();
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["choices"][0]["message"]["content"], "reply to: x");
  EXPECT_TRUE(j["request_id"].is_string());
  EXPECT_EQ(r.header("x-request-id"), j["request_id"].get<std::string>());
}

TEST_F(DashScope, CompatibleModeStreamWithThinking) {
  const json body{{"model", "qwen3~tokens=2"},
                  {"stream", true},
                  {"enable_thinking", true},
                  {"stream_options", {{"include_usage", true}}},
                  {"messages", {user("x")}}};
  const auto events = parse_sse(compatible(body).body);
  std::string reasoning;
  std::string content;
  int null_usage = 0;
  json usage;
  for (const auto& e : events) {
    const json chunk = json::parse(e.data, nullptr, false);
    if (chunk.is_discarded()) continue;
    if (chunk["usage"].is_null()) ++null_usage;
    if (chunk["choices"].empty()) {
      usage = chunk["usage"];
      continue;
    }
    const json& delta = chunk["choices"][0]["delta"];
    reasoning += delta.value("reasoning_content", "");
    if (delta.contains("content") && delta["content"].is_string())
      content += delta["content"].get<std::string>();
  }
  EXPECT_FALSE(reasoning.empty());
  EXPECT_EQ(content, "reply to:");
  EXPECT_GT(null_usage, 3);
  EXPECT_EQ(usage["completion_tokens"], 2);
  EXPECT_EQ(events.back().data, "[DONE]");
  // Non-streamed thinking is refused.
  json non_stream = body;
  non_stream.erase("stream");
  non_stream.erase("stream_options");
  EXPECT_EQ(compatible(non_stream).status, 400);
}

TEST_F(DashScope, CompatibleModeErrorsCarryRequestId) {
  HttpResult r = compatible({{"model", "qwen~status=429"}, {"messages", {user("x")}}});
  EXPECT_EQ(r.status, 429);
  json j = r.json_body();
  EXPECT_EQ(j["error"]["code"], "Throttling.RateQuota");
  EXPECT_TRUE(j["error"].contains("param"));
  EXPECT_TRUE(j["request_id"].is_string());

  r = perform({"POST",
               url("/compatible-mode/v1/chat/completions"),
               {},
               json{{"model", "q"}, {"messages", {user("x")}}}.dump(),
               5000});
  EXPECT_EQ(r.status, 401);
  j = r.json_body();
  EXPECT_EQ(j["error"]["code"], "invalid_api_key");
  EXPECT_TRUE(j["request_id"].is_string());
}

}  // namespace
}  // namespace dispatch::fake_provider::test
