// Anthropic Messages conformance: POST /v1/messages.

#include "http_client.hpp"

namespace dispatch::fake_provider::test {
namespace {

class Anthropic : public FakeProviderTest {};

json base(const std::string& model, json messages) {
  return json{{"model", model}, {"max_tokens", 1024}, {"messages", std::move(messages)}};
}

json weather_tool() {
  return json{{"name", "get_weather"},
              {"description", "weather"},
              {"input_schema",
               {{"type", "object"},
                {"properties", {{"city", {{"type", "string"}}}, {"days", {{"type", "number"}}}}}}}};
}

// A valid minimal body with one field replaced or added.
json patched(const std::string& key, json value) {
  json body = base("m", {user("x")});
  body[key] = std::move(value);
  return body;
}

std::vector<std::string> names(const std::vector<SseEvent>& events) {
  std::vector<std::string> out;
  for (const auto& e : events) out.push_back(e.event);
  return out;
}

TEST_F(Anthropic, NonStreamedReply) {
  json body = base("claude-sonnet-4-5", {user("hello world")});
  body["system"] = "be nice";
  const HttpResult r = anthropic(body);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_TRUE(r.header("request-id").has_value());
  const json j = r.json_body();
  EXPECT_EQ(j["id"], "msg_1");
  EXPECT_EQ(j["type"], "message");
  EXPECT_EQ(j["role"], "assistant");
  EXPECT_EQ(j["model"], "claude-sonnet-4-5");
  EXPECT_FALSE(j.contains("created"));
  EXPECT_EQ(
      j["content"],
      (json::array({{{"type", "text"}, {"text", "reply to: hello world lorem ipsum dolor sit"}}})));
  EXPECT_EQ(j["stop_reason"], "end_turn");
  EXPECT_TRUE(j["stop_sequence"].is_null());
  EXPECT_EQ(j["usage"]["input_tokens"], 4);
  EXPECT_EQ(j["usage"]["output_tokens"], 8);
}

TEST_F(Anthropic, StreamedReplyFollowsTheEventOrder) {
  json body = base("claude~tokens=3", {user("hi")});
  body["stream"] = true;
  const HttpResult r = anthropic(body);
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.header("content-type"), "text/event-stream; charset=utf-8");
  const auto events = parse_sse(r.body);
  EXPECT_EQ(names(events), (std::vector<std::string>{"message_start", "ping", "content_block_start",
                                                     "content_block_delta", "content_block_delta",
                                                     "content_block_delta", "content_block_stop",
                                                     "message_delta", "message_stop"}));
  for (const auto& e : events) EXPECT_EQ(json::parse(e.data)["type"], e.event);
  const json start = json::parse(events[0].data)["message"];
  EXPECT_EQ(start["id"], "msg_1");
  EXPECT_EQ(start["content"], json::array());
  EXPECT_EQ(start["usage"]["input_tokens"], 1);
  EXPECT_EQ(json::parse(events[2].data)["content_block"], (json{{"type", "text"}, {"text", ""}}));
  std::string text;
  for (size_t i = 3; i <= 5; ++i) {
    const json delta = json::parse(events[i].data)["delta"];
    EXPECT_EQ(delta["type"], "text_delta");
    text += delta["text"].get<std::string>();
  }
  EXPECT_EQ(text, "reply to: hi");
  const json message_delta = json::parse(events[7].data);
  EXPECT_EQ(message_delta["delta"]["stop_reason"], "end_turn");
  EXPECT_EQ(message_delta["usage"]["output_tokens"], 3);
}

TEST_F(Anthropic, ThinkingBlockComesFirst) {
  json body = base("claude~tokens=2", {user("think")});
  body["thinking"] = {{"type", "enabled"}, {"budget_tokens", 1024}};
  body["max_tokens"] = 2048;
  const json j = anthropic(body).json_body();
  ASSERT_EQ(j["content"].size(), 2u) << j.dump();
  EXPECT_EQ(j["content"][0]["type"], "thinking");
  EXPECT_FALSE(j["content"][0]["thinking"].get<std::string>().empty());
  EXPECT_FALSE(j["content"][0]["signature"].get<std::string>().empty());
  EXPECT_EQ(j["content"][1], (json{{"type", "text"}, {"text", "reply to:"}}));

  body["stream"] = true;
  const auto events = parse_sse(anthropic(body).body);
  std::string thinking;
  bool signature = false;
  int text_index = -1;
  for (const auto& e : events) {
    const json data = json::parse(e.data);
    if (e.event == "content_block_start" && data["content_block"]["type"] == "text") {
      text_index = data["index"];
    }
    if (e.event != "content_block_delta") continue;
    if (data["delta"]["type"] == "thinking_delta") {
      EXPECT_EQ(data["index"], 0);
      thinking += data["delta"]["thinking"].get<std::string>();
    }
    if (data["delta"]["type"] == "signature_delta") signature = true;
  }
  EXPECT_EQ(thinking, j["content"][0]["thinking"]);
  EXPECT_TRUE(signature);
  EXPECT_EQ(text_index, 1);
}

TEST_F(Anthropic, ToolUse) {
  json body = base("claude", {user("check get_weather please")});
  body["tools"] = {weather_tool()};
  const json j = anthropic(body).json_body();
  ASSERT_EQ(j["content"].size(), 1u);
  EXPECT_EQ(j["content"][0]["type"], "tool_use");
  EXPECT_EQ(j["content"][0]["id"], "toolu_1");
  EXPECT_EQ(j["content"][0]["name"], "get_weather");
  EXPECT_EQ(j["content"][0]["input"], (json{{"city", "fake-city"}, {"days", 1}}));
  EXPECT_EQ(j["stop_reason"], "tool_use");

  body["stream"] = true;
  const auto events = parse_sse(anthropic(body).body);
  std::string partial;
  int fragments = 0;
  std::string stop_reason;
  for (const auto& e : events) {
    const json data = json::parse(e.data);
    if (e.event == "content_block_start") {
      EXPECT_EQ(data["content_block"]["type"], "tool_use");
      EXPECT_EQ(data["content_block"]["name"], "get_weather");
      EXPECT_EQ(data["content_block"]["input"], json::object());
    }
    if (e.event == "content_block_delta") {
      EXPECT_EQ(data["delta"]["type"], "input_json_delta");
      partial += data["delta"]["partial_json"].get<std::string>();
      ++fragments;
    }
    if (e.event == "message_delta") stop_reason = data["delta"]["stop_reason"];
  }
  EXPECT_GE(fragments, 2);
  EXPECT_EQ(json::parse(partial), (json{{"city", "fake-city"}, {"days", 1}}));
  EXPECT_EQ(stop_reason, "tool_use");
}

TEST_F(Anthropic, ToolResultIsAnsweredWithText) {
  const json messages{
      user("weather?"),
      {{"role", "assistant"},
       {"content",
        {{{"type", "tool_use"},
          {"id", "toolu_7"},
          {"name", "get_weather"},
          {"input", {{"city", "Rome"}}}}}}},
      {{"role", "user"},
       {"content", {{{"type", "tool_result"}, {"tool_use_id", "toolu_7"}, {"content", "rainy"}}}}}};
  json body = base("claude~tokens=4", messages);
  body["tools"] = {weather_tool()};
  const HttpResult r = anthropic(body);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json_body()["content"][0]["text"], "tool result: rainy lorem");
}

TEST_F(Anthropic, ImagesStopSequenceAndMaxTokens) {
  const json content{
      {{"type", "image"},
       {"source", {{"type", "base64"}, {"media_type", "image/png"}, {"data", "iVBORw0KGgo="}}}},
      {{"type", "text"}, {"text", "what is this"}}};
  json j =
      anthropic(base("claude~tokens=6", {{{"role", "user"}, {"content", content}}})).json_body();
  EXPECT_EQ(j["content"][0]["text"], "[1 images] reply to: what is");

  json body = base("claude", {user("one two three")});
  body["stop_sequences"] = {"two"};
  j = anthropic(body).json_body();
  EXPECT_EQ(j["content"][0]["text"], "reply to: one ");
  EXPECT_EQ(j["stop_reason"], "stop_sequence");
  EXPECT_EQ(j["stop_sequence"], "two");

  body = base("claude", {user("x")});
  body["max_tokens"] = 2;
  j = anthropic(body).json_body();
  EXPECT_EQ(j["content"][0]["text"], "reply to:");
  EXPECT_EQ(j["stop_reason"], "max_tokens");
  EXPECT_EQ(j["usage"]["output_tokens"], 2);
}

TEST_F(Anthropic, AuthenticationAndVersionHeaders) {
  const std::string body = base("claude", {user("x")}).dump();
  HttpResult r =
      perform({"POST", url("/v1/messages"), {"anthropic-version: 2023-06-01"}, body, 5000});
  EXPECT_EQ(r.status, 401);
  json j = r.json_body();
  EXPECT_EQ(j["type"], "error");
  EXPECT_EQ(j["error"]["type"], "authentication_error");
  EXPECT_TRUE(j["error"]["message"].is_string());
  EXPECT_TRUE(j["request_id"].is_string());

  r = perform({"POST", url("/v1/messages"), {"x-api-key: k"}, body, 5000});
  EXPECT_EQ(r.status, 400);
  j = r.json_body();
  EXPECT_EQ(j["error"]["type"], "invalid_request_error");
  EXPECT_NE(j["error"]["message"].get<std::string>().find("anthropic-version"), std::string::npos);
}

// SDK 1.x sends its key as Authorization: Bearer and a newer anthropic-version; the service
// (and so the fake) takes either header form and any version.
TEST_F(Anthropic, AcceptsBearerKeyAndAnyVersion) {
  const std::string body = base("claude", {user("x")}).dump();
  for (const std::string version : {"2023-06-01", "2026-10-21"}) {
    const HttpResult r =
        perform({"POST",
                 url("/v1/messages"),
                 {"Authorization: Bearer sk-ant-sdk1", "anthropic-version: " + version},
                 body,
                 5000});
    ASSERT_EQ(r.status, 200) << version << ": " << r.body;
    EXPECT_EQ(r.json_body()["type"], "message");
  }
  // A Bearer without a key is still no key.
  const HttpResult empty = perform({"POST",
                                    url("/v1/messages"),
                                    {"Authorization: Bearer ", "anthropic-version: 2026-10-21"},
                                    body,
                                    5000});
  EXPECT_EQ(empty.status, 401);
  EXPECT_EQ(empty.json_body()["error"]["type"], "authentication_error");
}

TEST_F(Anthropic, StrictValidation) {
  const std::vector<std::pair<json, std::string>> cases{
      {{{"model", "m"}, {"messages", {user("x")}}}, "max_tokens"},
      {{{"max_tokens", 5}, {"messages", {user("x")}}}, "model"},
      {{{"model", "m"}, {"max_tokens", 5}}, "messages"},
      {base("m", {{{"role", "system"}, {"content", "sys"}}, user("x")}), "system"},
      {patched("temperature", 1.5), "temperature"},
      {base("m", {user("x"),
                  {{"role", "user"},
                   {"content",
                    {{{"type", "tool_result"}, {"tool_use_id", "toolu_x"}, {"content", "r"}}}}}}),
       "tool_use_id"},
      {base("m",
            {user("x"),
             {{"role", "assistant"},
              {"content",
               {{{"type", "tool_use"}, {"id", "t1"}, {"name", "f"}, {"input", json::object()}}}}},
             user("no result")}),
       "t1"},
      {patched("n", 2), "Extra inputs are not permitted"},
      {patched("max_tokens", 0), "max_tokens"},
      {base("m", {{{"role", "user"},
                   {"content",
                    {{{"type", "image"},
                      {"source",
                       {{"type", "base64"}, {"media_type", "image/bmp"}, {"data", "aGk="}}}}}}}}),
       "media_type"},
      {patched("thinking", {{"type", "enabled"}, {"budget_tokens", 100}}), "budget_tokens"},
  };
  for (const auto& [body, needle] : cases) {
    SCOPED_TRACE(body.dump());
    const HttpResult r = anthropic(body);
    EXPECT_EQ(r.status, 400) << r.body;
    const json j = r.json_body();
    EXPECT_EQ(j["type"], "error");
    EXPECT_EQ(j["error"]["type"], "invalid_request_error");
    EXPECT_NE(j["error"]["message"].get<std::string>().find(needle), std::string::npos)
        << j["error"]["message"];
  }
}

TEST_F(Anthropic, UnknownModelIs404) {
  const HttpResult r = anthropic(base("no-such-model~latency_ms=1", {user("x")}));
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.json_body()["error"]["type"], "not_found_error");
}

TEST_F(Anthropic, ListsModelsWithApiKey) {
  const HttpResult r = perform(
      {"GET", url("/v1/models"), {"x-api-key: k", "anthropic-version: 2023-06-01"}, "", 5000});
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.json_body()["data"][0]["type"], "model");
  EXPECT_EQ(r.json_body()["has_more"], false);
}

TEST_F(Anthropic, ListsModelsWithBearerKey) {
  const HttpResult r = perform({"GET",
                                url("/v1/models"),
                                {"Authorization: Bearer k", "anthropic-version: 2026-10-21"},
                                "",
                                5000});
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.json_body()["data"][0]["type"], "model");  // Anthropic's shape, not OpenAI's
}

}  // namespace
}  // namespace dispatch::fake_provider::test
