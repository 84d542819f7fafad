// OpenAI Chat Completions conformance: POST /v1/chat/completions.

#include "http_client.hpp"

namespace dispatch::fake_provider::test {
namespace {

class OpenAi : public FakeProviderTest {};

json weather_tool() {
  return json{{"type", "function"},
              {"function",
               {{"name", "get_weather"},
                {"description", "weather"},
                {"parameters",
                 {{"type", "object"},
                  {"properties",
                   {{"city", {{"type", "string"}}},
                    {"days", {{"type", "integer"}}},
                    {"metric", {{"type", "boolean"}}}}}}}}}};
}

// Content of every chunk with a non-empty delta.content.
std::vector<std::string> contents(const std::vector<SseEvent>& events) {
  std::vector<std::string> out;
  for (const auto& e : events) {
    const json chunk = json::parse(e.data, nullptr, false);
    if (chunk.is_discarded() || !chunk.contains("choices") || chunk["choices"].empty()) continue;
    const json& delta = chunk["choices"][0]["delta"];
    if (delta.contains("content") && delta["content"].is_string() &&
        !delta["content"].get<std::string>().empty()) {
      out.push_back(delta["content"]);
    }
  }
  return out;
}

TEST_F(OpenAi, NonStreamedReply) {
  const json body{
      {"model", "gpt-4o"},
      {"messages", {{{"role", "system"}, {"content", "be brief"}}, user("hello there world")}}};
  const HttpResult r = openai(body);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("content-type"), "application/json");
  EXPECT_TRUE(r.header("x-request-id").has_value());
  const json j = r.json_body();
  EXPECT_EQ(j["id"], "chatcmpl-1");
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_TRUE(j["created"].is_number_integer());
  EXPECT_EQ(j["model"], "gpt-4o");
  EXPECT_EQ(j["choices"][0]["index"], 0);
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(j["choices"][0]["message"]["content"], "reply to: hello there world lorem ipsum dolor");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(j["usage"],
            (json{{"prompt_tokens", 5}, {"completion_tokens", 8}, {"total_tokens", 13}}));
}

TEST_F(OpenAi, StreamedReply) {
  const json body{{"model", "gpt-4o~tokens=4"}, {"stream", true}, {"messages", {user("hi")}}};
  const HttpResult r = openai(body);
  ASSERT_EQ(r.curl_code, CURLE_OK) << r.error;
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.header("content-type"), "text/event-stream; charset=utf-8");
  EXPECT_EQ(r.header("transfer-encoding"), "chunked");
  EXPECT_EQ(r.body.rfind(": keep-alive\n\n", 0), 0u) << "starts with an SSE comment";
  const auto events = parse_sse(r.body);
  ASSERT_GE(events.size(), 4u);
  EXPECT_EQ(events.front().comments, (std::vector<std::string>{" keep-alive"}));
  const json first = json::parse(events[1].data);
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(contents(events), (std::vector<std::string>{"reply ", "to: ", "hi ", "lorem"}));
  const json finish = json::parse(events[events.size() - 2].data);
  EXPECT_EQ(finish["choices"][0]["delta"], json::object());
  EXPECT_EQ(finish["choices"][0]["finish_reason"], "stop");
  EXPECT_FALSE(finish.contains("usage")) << "no usage without stream_options.include_usage";
  EXPECT_EQ(events.back().data, "[DONE]");
  // Every data event but [DONE] uses "data: " with a space and is valid JSON.
  EXPECT_EQ(r.body.find("data:{"), std::string::npos);
}

TEST_F(OpenAi, StreamWithIncludeUsageEndsWithAUsageChunk) {
  const json body{{"model", "gpt-4o"},
                  {"stream", true},
                  {"stream_options", {{"include_usage", true}}},
                  {"messages", {user("one two")}}};
  const auto events = parse_sse(openai(body).body);
  ASSERT_GE(events.size(), 3u);
  const json usage = json::parse(events[events.size() - 2].data);
  EXPECT_EQ(usage["choices"], json::array());
  EXPECT_EQ(usage["usage"],
            (json{{"prompt_tokens", 2}, {"completion_tokens", 8}, {"total_tokens", 10}}));
  const json content = json::parse(events[2].data);
  EXPECT_TRUE(content.contains("usage") && content["usage"].is_null());
  EXPECT_EQ(events.back().data, "[DONE]");
}

TEST_F(OpenAi, ToolCallNonStreamed) {
  const json body{{"model", "gpt-4o"},
                  {"messages", {user("what is the weather? use get_weather")}},
                  {"tools", {weather_tool()}}};
  const json j = openai(body).json_body();
  const json& message = j["choices"][0]["message"];
  EXPECT_TRUE(message["content"].is_null());
  ASSERT_EQ(message["tool_calls"].size(), 1u);
  const json& call = message["tool_calls"][0];
  EXPECT_EQ(call["id"], "call_1");
  EXPECT_EQ(call["type"], "function");
  EXPECT_EQ(call["function"]["name"], "get_weather");
  ASSERT_TRUE(call["function"]["arguments"].is_string());
  EXPECT_EQ(json::parse(call["function"]["arguments"].get<std::string>()),
            (json{{"city", "fake-city"}, {"days", 1}, {"metric", true}}));
  EXPECT_EQ(j["choices"][0]["finish_reason"], "tool_calls");
}

TEST_F(OpenAi, ToolCallStreamedInFragments) {
  const json body{{"model", "gpt-4o"},
                  {"stream", true},
                  {"messages", {user("call the tool")}},
                  {"tools", {weather_tool()}}};
  const auto events = parse_sse(openai(body).body);
  std::vector<json> deltas;
  std::string finish;
  for (const auto& e : events) {
    const json chunk = json::parse(e.data, nullptr, false);
    if (chunk.is_discarded()) continue;
    const json& choice = chunk["choices"][0];
    if (choice["delta"].contains("tool_calls")) deltas.push_back(choice["delta"]["tool_calls"][0]);
    if (choice["finish_reason"].is_string()) finish = choice["finish_reason"];
  }
  ASSERT_GE(deltas.size(), 3u) << "a header delta and at least two argument fragments";
  EXPECT_EQ(deltas[0]["index"], 0);
  EXPECT_EQ(deltas[0]["id"], "call_1");
  EXPECT_EQ(deltas[0]["type"], "function");
  EXPECT_EQ(deltas[0]["function"]["name"], "get_weather");
  EXPECT_EQ(deltas[0]["function"]["arguments"], "");
  std::string arguments;
  for (size_t i = 1; i < deltas.size(); ++i) {
    EXPECT_EQ(deltas[i]["index"], 0);
    EXPECT_FALSE(deltas[i].contains("id"));
    arguments += deltas[i]["function"]["arguments"].get<std::string>();
  }
  EXPECT_EQ(json::parse(arguments), (json{{"city", "fake-city"}, {"days", 1}, {"metric", true}}));
  EXPECT_EQ(finish, "tool_calls");
  EXPECT_EQ(events.back().data, "[DONE]");
}

TEST_F(OpenAi, ToolChoiceNoneAnswersWithText) {
  const json body{{"model", "gpt-4o"},
                  {"messages", {user("use the tool")}},
                  {"tools", {weather_tool()}},
                  {"tool_choice", "none"}};
  const json j = openai(body).json_body();
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_TRUE(j["choices"][0]["message"]["content"].is_string());
}

TEST_F(OpenAi, ToolResultIsAnsweredWithText) {
  const json body{
      {"model", "gpt-4o~tokens=5"},
      {"messages",
       {user("weather?"),
        {{"role", "assistant"},
         {"content", nullptr},
         {"tool_calls",
          {{{"id", "call_9"},
            {"type", "function"},
            {"function", {{"name", "get_weather"}, {"arguments", "{\"city\":\"Paris\"}"}}}}}}},
        {{"role", "tool"}, {"tool_call_id", "call_9"}, {"content", "sunny and warm"}}}},
      {"tools", {weather_tool()}}};
  const HttpResult r = openai(body);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json_body()["choices"][0]["message"]["content"], "tool result: sunny and warm");
}

TEST_F(OpenAi, ImagesAreCounted) {
  const json parts = json::array(
      {{{"type", "text"}, {"text", "describe"}},
       {{"type", "image_url"}, {"image_url", {{"url", "https://example.com/a.png"}}}},
       {{"type", "image_url"},
        {"image_url", {{"url", "data:image/png;base64,iVBORw0KGgo="}, {"detail", "low"}}}}});
  const json body{{"model", "gpt-4o"}, {"messages", {{{"role", "user"}, {"content", parts}}}}};
  const json j = openai(body).json_body();
  EXPECT_EQ(j["choices"][0]["message"]["content"],
            "[2 images] reply to: describe lorem ipsum dolor");
  EXPECT_EQ(j["usage"]["prompt_tokens"], 1);
}

TEST_F(OpenAi, StopSequenceAndMaxTokens) {
  json body{{"model", "gpt-4o"}, {"messages", {user("a b c")}}, {"stop", {"c", "zz"}}};
  json j = openai(body).json_body();
  EXPECT_EQ(j["choices"][0]["message"]["content"], "reply to: a b ");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(j["usage"]["completion_tokens"], 4);

  body = json{{"model", "gpt-4o"}, {"messages", {user("a")}}, {"max_completion_tokens", 3}};
  j = openai(body).json_body();
  EXPECT_EQ(j["choices"][0]["message"]["content"], "reply to: a");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["completion_tokens"], 3);

  body = json{{"model", "gpt-4o"}, {"messages", {user("a")}}, {"max_tokens", 2}, {"stream", true}};
  const auto events = parse_sse(openai(body).body);
  EXPECT_EQ(contents(events), (std::vector<std::string>{"reply ", "to:"}));
  EXPECT_EQ(json::parse(events[events.size() - 2].data)["choices"][0]["finish_reason"], "length");
}

TEST_F(OpenAi, MissingOrEmptyKeyIsRejected) {
  const json body{{"model", "gpt-4o"}, {"messages", {user("hi")}}};
  for (const std::vector<std::string>& headers :
       {std::vector<std::string>{}, std::vector<std::string>{"Authorization: Bearer "}}) {
    const HttpResult r = perform({"POST", url("/v1/chat/completions"), headers, body.dump(), 5000});
    EXPECT_EQ(r.status, 401);
    const json j = r.json_body();
    EXPECT_EQ(j["error"]["type"], "invalid_request_error");
    EXPECT_EQ(j["error"]["code"], "invalid_api_key");
    EXPECT_TRUE(j["error"]["param"].is_null());
    EXPECT_TRUE(j["error"]["message"].is_string());
    EXPECT_EQ(j.size(), 1u);
  }
  const json list = attempts("gpt-4o");
  ASSERT_EQ(list.size(), 2u);
  for (const json& a : list) EXPECT_EQ(a["outcome"], "auth_failed");
}

struct Invalid {
  std::string name;
  json body;
  std::string param;  // expected error.param
  std::string message_part;
};

TEST_F(OpenAi, StrictValidation) {
  const json tool_call_with_object_args{
      {"role", "assistant"},
      {"content", nullptr},
      {"tool_calls",
       {{{"id", "c1"},
         {"type", "function"},
         {"function", {{"name", "f"}, {"arguments", {{"a", 1}}}}}}}}};
  const std::vector<Invalid> cases{
      {"no model", {{"messages", {user("x")}}}, "model", "model"},
      {"no messages", {{"model", "m"}}, "messages", "messages"},
      {"empty messages", {{"model", "m"}, {"messages", json::array()}}, "messages", "empty"},
      {"bad role",
       {{"model", "m"}, {"messages", {{{"role", "robot"}, {"content", "x"}}}}},
       "messages[0].role",
       "robot"},
      {"arguments object",
       {{"model", "m"}, {"messages", {user("x"), tool_call_with_object_args}}},
       "messages[1].tool_calls[0].function.arguments",
       "expected a string"},
      {"tool without id",
       {{"model", "m"}, {"messages", {user("x"), {{"role", "tool"}, {"content", "r"}}}}},
       "messages[1].tool_call_id",
       "tool_call_id"},
      {"unanswered tool call",
       {{"model", "m"},
        {"messages",
         {user("x"),
          {{"role", "assistant"},
           {"tool_calls",
            {{{"id", "c1"},
              {"type", "function"},
              {"function", {{"name", "f"}, {"arguments", "{}"}}}}}}},
          user("y")}}},
       "messages",
       "c1"},
      {"image url scheme",
       {{"model", "m"},
        {"messages",
         {{{"role", "user"},
           {"content", {{{"type", "image_url"}, {"image_url", {{"url", "ftp://x/y.png"}}}}}}}}}},
       "messages[0].content[0].image_url.url",
       "image_url"},
      {"image data url not base64",
       {{"model", "m"},
        {"messages",
         {{{"role", "user"},
           {"content",
            {{{"type", "image_url"}, {"image_url", {{"url", "data:text/plain;base64,aGk="}}}}}}}}}},
       "messages[0].content[0].image_url.url",
       "image_url"},
      {"unknown field",
       {{"model", "m"}, {"messages", {user("x")}}, {"enable_thinking", true}},
       "enable_thinking",
       "Unrecognized request argument"},
      {"temperature",
       {{"model", "m"}, {"messages", {user("x")}}, {"temperature", 2.5}},
       "temperature",
       "maximum"},
      {"stream_options without stream",
       {{"model", "m"}, {"messages", {user("x")}}, {"stream_options", {{"include_usage", true}}}},
       "stream_options",
       "stream"},
      {"max_tokens zero",
       {{"model", "m"}, {"messages", {user("x")}}, {"max_tokens", 0}},
       "max_tokens",
       ">= 1"},
      {"tool_choice without tools",
       {{"model", "m"}, {"messages", {user("x")}}, {"tool_choice", "auto"}},
       "tool_choice",
       "tools"},
      {"bad tool name",
       {{"model", "m"},
        {"messages", {user("x")}},
        {"tools", {{{"type", "function"}, {"function", {{"name", "has space"}}}}}}},
       "tools[0].function.name",
       "pattern"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const HttpResult r = openai(c.body);
    EXPECT_EQ(r.status, 400) << r.body;
    const json j = r.json_body();
    EXPECT_EQ(j["error"]["type"], "invalid_request_error");
    EXPECT_EQ(
        j["error"].value("param", json()).is_string() ? j["error"]["param"].get<std::string>() : "",
        c.param);
    EXPECT_NE(j["error"]["message"].get<std::string>().find(c.message_part), std::string::npos)
        << j["error"]["message"];
  }
}

TEST_F(OpenAi, InvalidJsonBody) {
  const HttpResult r = perform(
      {"POST", url("/v1/chat/completions"), {"Authorization: Bearer k"}, "{not json", 5000});
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.json_body()["error"]["type"], "invalid_request_error");
}

TEST_F(OpenAi, UnknownModelIs404) {
  const HttpResult r = openai({{"model", "no-such-model"}, {"messages", {user("x")}}});
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.json_body()["error"]["code"], "model_not_found");
  EXPECT_EQ(r.json_body()["error"]["type"], "invalid_request_error");
  EXPECT_EQ(only_attempt("no-such-model")["outcome"], "model_not_found");
}

TEST_F(OpenAi, ListsModels) {
  const HttpResult r = perform({"GET", url("/v1/models"), {"Authorization: Bearer k"}, "", 5000});
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.json_body()["object"], "list");
  EXPECT_FALSE(r.json_body()["data"].empty());
  EXPECT_EQ(perform({"GET", url("/v1/models"), {}, "", 5000}).status, 401);
}

}  // namespace
}  // namespace dispatch::fake_provider::test
