#include "dispatch/formats/openai.hpp"

#include <gtest/gtest.h>

#include "dispatch/formats/json_text.hpp"

namespace dispatch::formats {
namespace {

json simple_body() {
  return json::parse(R"({"model":"openai/gpt-4o-mini",
                         "messages":[{"role":"user","content":"Hi"}]})");
}

RequestError error_of(const json& body) {
  auto parsed = parse_openai_chat(body);
  EXPECT_FALSE(parsed.ok()) << body.dump();
  return parsed.ok() ? RequestError{} : parsed.error();
}

// The body of the whole surface, parsed once for the tests below.
ChatRequest whole_surface() {
  const json body = json::parse(R"({
    "model": "gpt-4o",
    "messages": [
      {"role": "developer", "content": "Be brief."},
      {"role": "user", "content": [
        {"type": "text", "text": "What is in these?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8=", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]},
      {"role": "assistant", "content": null, "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "lookup", "arguments": "{\"q\":1}"}}]},
      {"role": "tool", "tool_call_id": "call_1", "name": "lookup", "content": [{"type":"text","text":"42"}]}
    ],
    "temperature": 0.2, "top_p": 0.5, "max_tokens": 10, "max_completion_tokens": 300,
    "stop": ["END", "STOP"], "n": 1, "user": "u-7", "metadata": {"team": "a", "n": 3},
    "tools": [{"type": "function", "function": {"name": "lookup", "description": "Look it up",
               "parameters": {"type": "object", "properties": {"q": {"type": "integer"}}}}}],
    "tool_choice": {"type": "function", "function": {"name": "lookup"}},
    "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
    "stream": true, "stream_options": {"include_usage": true},
    "fallbacks": ["claude/claude-3-5-haiku"], "timeout_ms": 9000, "retry_count": 1,
    "priority": "batch", "frequency_penalty": 0.5, "seed": 7, "logit_bias": {"50256": -100}
  })");
  auto parsed = parse_openai_chat(body);
  EXPECT_TRUE(parsed.ok()) << parsed.error().message;
  return parsed.ok() ? *parsed : ChatRequest{};
}

TEST(OpenAiRequestTest, TheWholeSurface) {
  const std::optional<ChatRequest> parsed = whole_surface();
  const ChatRequest& chat = *parsed;
  EXPECT_EQ(chat.model, "gpt-4o");
  EXPECT_TRUE(chat.stream);
  EXPECT_TRUE(chat.include_usage);
  EXPECT_EQ(chat.priority, protocol::Priority::batch);
  EXPECT_EQ(chat.fallbacks, std::vector<std::string>{"claude/claude-3-5-haiku"});
  const protocol::Request& r = chat.request;
  EXPECT_TRUE(r.stream);
  ASSERT_EQ(r.messages.size(), 4u);
  EXPECT_EQ(r.messages[0].role, "system");
  EXPECT_EQ(r.messages[1].content, "What is in these?");
  EXPECT_EQ(r.messages[1].images, (std::vector<std::string>{"data:image/png;base64,aGVsbG8=",
                                                            "https://example.com/cat.png"}));
  EXPECT_EQ(r.messages[2].tool_calls,
            (std::vector<protocol::ToolCall>{{"call_1", "lookup", "{\"q\":1}"}}));
  EXPECT_EQ(r.messages[3].role, "tool");
  EXPECT_EQ(r.messages[3].tool_call_id, "call_1");
  EXPECT_EQ(r.messages[3].tool_name, "lookup");
  EXPECT_EQ(r.messages[3].content, "42");
  EXPECT_EQ(r.temperature, 0.2);
  EXPECT_EQ(r.top_p, 0.5);
  EXPECT_EQ(r.max_tokens, 300u);  // max_completion_tokens wins
  EXPECT_EQ(r.stop, (std::vector<std::string>{"END", "STOP"}));
  EXPECT_EQ(r.metadata,
            (std::map<std::string, std::string>{{"team", "a"}, {"n", "3"}, {"user", "u-7"}}));
  ASSERT_EQ(r.tools.size(), 1u);
  EXPECT_EQ(r.tools[0].parameters, R"({"properties":{"q":{"type":"integer"}},"type":"object"})");
  EXPECT_EQ(r.tool_choice, "function");
  EXPECT_EQ(r.tool_choice_function, "lookup");
  EXPECT_EQ(r.response_format, "json_schema");
  EXPECT_EQ(r.response_schema, R"({"type":"object"})");
  EXPECT_EQ(r.timeout_ms, 9000u);
  EXPECT_EQ(r.retry_count, 1u);
  EXPECT_TRUE(r.provider.empty());  // resolved later
}

TEST(OpenAiRequestTest, StopAsAStringAndArgumentsAsAnObject) {
  json body = simple_body();
  body["stop"] = "END";
  body["messages"].push_back(json::parse(
      R"({"role":"assistant","tool_calls":[{"id":"c","function":{"name":"f","arguments":{"a":1}}}]})"));
  auto parsed = parse_openai_chat(body);
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->request.stop, std::vector<std::string>{"END"});
  EXPECT_EQ(parsed->request.messages[1].tool_calls[0].arguments, R"({"a":1})");
  EXPECT_FALSE(parsed->stream);
  EXPECT_FALSE(parsed->request.fallbacks.has_value());
}

TEST(OpenAiRequestTest, WrongTypesNameTheirField) {
  const std::pair<const char*, const char*> cases[] = {
      {R"({"model":5,"messages":[]})", "model"},
      {R"({"model":"m","messages":{}})", "messages"},
      {R"({"model":"m","messages":[]})", "messages"},
      {R"({"model":"m","messages":["hi"]})", "messages[0]"},
      {R"({"model":"m","messages":[{"role":1}]})", "messages[0].role"},
      {R"({"model":"m","messages":[{"role":"robot","content":"x"}]})", "messages[0].role"},
      {R"({"model":"m","messages":[{"role":"user","content":7}]})", "messages[0].content"},
      {R"({"model":"m","messages":[{"role":"user","content":""}]})", "messages[0].content"},
      {R"({"model":"m","messages":[{"role":"user","content":[{"type":"audio"}]}]})",
       "messages[0].content[0].type"},
      {R"({"model":"m","messages":[{"role":"user","content":[{"type":"text","text":1}]}]})",
       "messages[0].content[0].text"},
      {R"({"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,%%%"}}]}]})",
       "messages[0].content[0].image_url.url"},
      {R"({"model":"m","messages":[{"role":"tool","content":"x"}]})", "messages[0].tool_call_id"},
      {R"({"model":"m","messages":[{"role":"assistant","tool_calls":[{"function":{}}]}]})",
       "messages[0].tool_calls[0].function.name"},
      {R"({"model":"m","messages":[{"role":"assistant","tool_calls":"x"}]})",
       "messages[0].tool_calls"},
  };
  for (const auto& [text, param] : cases) {
    const RequestError error = error_of(json::parse(text));
    EXPECT_EQ(error.param, param) << text << " -> " << error.message;
    EXPECT_EQ(error.status, 400);
    EXPECT_EQ(error.message.rfind(param, 0), 0u) << error.message;
  }
}

TEST(OpenAiRequestTest, BadValuesNameTheirField) {
  const std::pair<const char*, json> cases[] = {
      {"temperature", "hot"},
      {"temperature", 2.5},
      {"top_p", -0.1},
      {"max_tokens", -1},
      {"max_tokens", 1.5},
      {"max_tokens", 5'000'000'000},
      // 0 is refused as the protocol refuses it: accepted, the broker bounced the job as
      // malformed (found by fuzzing: tests/fuzz/corpus/formats/crash-*-0).
      {"max_tokens", 0},
      {"max_completion_tokens", 0},
      {"timeout_ms", 0},
      {"n", 2},
      {"stop", 5},
      {"stop", json::array({1})},
      {"tools", "x"},
      {"tool_choice", "sometimes"},
      {"response_format", "json"},
      {"metadata", "x"},
      {"stream", "yes"},
      {"stream_options", 1},
      {"timeout_ms", "1s"},
      {"retry_count", -2},
      {"priority", "urgent"},
      {"fallbacks", "openai/gpt-4o"},
      {"user", 5},
  };
  for (const auto& [key, value] : cases) {
    json body = simple_body();
    body[key] = value;
    const RequestError error = error_of(body);
    EXPECT_EQ(error.param.rfind(key, 0), 0u) << key << "=" << value.dump() << " -> " << error.param;
    EXPECT_EQ(error.status, 400);
  }
  json body = simple_body();
  body["n"] = 2;
  EXPECT_EQ(error_of(body).message, "n: only n = 1 is supported");
  body = simple_body();
  body["tools"] = json::array({{{"type", "custom"}, {"custom", {{"name", "x"}}}}});
  EXPECT_EQ(error_of(body).param, "tools[0].type");
}

TEST(OpenAiRequestTest, HugeArraysAreRefusedNamingTheArray) {
  const auto many = [](std::size_t n, const json& item) {
    json array = json::array();
    for (std::size_t i = 0; i < n; ++i) array.push_back(item);
    return array;
  };
  const json user = {{"role", "user"}, {"content", "x"}};
  json body = simple_body();
  body["messages"] = many(kMaxMessages + 1, user);
  EXPECT_EQ(error_of(body).param, "messages");
  EXPECT_EQ(error_of(body).code, "too_large");
  body = simple_body();
  body["messages"][0]["content"] = many(kMaxContentParts + 1, {{"type", "text"}, {"text", "x"}});
  EXPECT_EQ(error_of(body).param, "messages[0].content");
  body = simple_body();
  body["tools"] = many(kMaxTools + 1, {{"type", "function"}, {"function", {{"name", "f"}}}});
  EXPECT_EQ(error_of(body).param, "tools");
  body = simple_body();
  body["stop"] = many(kMaxStopSequences + 1, "x");
  EXPECT_EQ(error_of(body).param, "stop");
  body = simple_body();
  body["fallbacks"] = many(kMaxFallbacks + 1, "a/b");
  EXPECT_EQ(error_of(body).param, "fallbacks");
  body = simple_body();
  body["messages"].push_back(
      {{"role", "assistant"},
       {"tool_calls", many(kMaxToolCalls + 1, {{"function", {{"name", "f"}}}})}});
  EXPECT_EQ(error_of(body).param, "messages[1].tool_calls");
}

TEST(OpenAiRequestTest, BatchFormIsStrictAboutTargets) {
  json body = simple_body();
  body["stream"] = true;
  body["fallbacks"] = json::array({"claude/claude-3-5-haiku", "ollama/", ""});
  auto request = request_from_openai_body(body);
  ASSERT_TRUE(request.ok()) << request.error().message;
  EXPECT_EQ(request->provider, "openai");
  EXPECT_EQ(request->model, "gpt-4o-mini");
  EXPECT_FALSE(request->stream);
  EXPECT_EQ(request->fallbacks, (std::vector<protocol::Target>{{"claude", "claude-3-5-haiku"}}));
  body["model"] = "gpt-4o-mini";
  auto bare = request_from_openai_body(body);
  ASSERT_FALSE(bare.ok());
  EXPECT_EQ(bare.error().message, "model: target 'gpt-4o-mini' is not \"provider/model\"");
  body = simple_body();
  body["fallbacks"] = json::array({"/x"});
  EXPECT_EQ(request_from_openai_body(body).error().param, "fallbacks[0]");
}

DispatchResponse sample_response() {
  DispatchResponse response;
  response.content = "Hello!";
  response.thinking = "hmm";
  response.provider = "claude";
  response.model = "claude-3-5-haiku";
  response.usage = {9, 3, 12};
  response.finish_reason = "stop";
  response.raw_finish_reason = "end_turn";
  response.request_id = "msg_1";
  response.created_at = 1'700'000'123;
  response.job_id = "0123456789abcdef0123456789abcdef";
  return response;
}

TEST(OpenAiResponseTest, ChatCompletionGolden) {
  auto response = sample_response();
  response.tool_calls.push_back({"call_9", "lookup", "{\"q\":2}"});
  response.finish_reason = "tool_calls";
  EXPECT_EQ(chat_completion_body(response), json::parse(R"({
    "id": "msg_1", "object": "chat.completion", "created": 1700000123,
    "model": "claude/claude-3-5-haiku",
    "choices": [{"index": 0, "logprobs": null, "finish_reason": "tool_calls",
      "message": {"role": "assistant", "content": "Hello!", "reasoning_content": "hmm",
        "tool_calls": [{"id": "call_9", "type": "function",
                        "function": {"name": "lookup", "arguments": "{\"q\":2}"}}]}}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}})"));
  response.request_id.clear();
  EXPECT_EQ(chat_completion_body(response)["id"], "chatcmpl-0123456789abcdef0123456789abcdef");
}

std::vector<json> events_of(const std::string& stream) {
  std::vector<json> events;
  std::size_t start = 0;
  while (start < stream.size()) {
    const auto end = stream.find("\n\n", start);
    EXPECT_NE(end, std::string::npos);
    const std::string event = stream.substr(start, end - start);
    EXPECT_EQ(event.rfind("data: ", 0), 0u) << event;
    const std::string data = event.substr(6);
    events.push_back(data == "[DONE]" ? json("[DONE]") : json::parse(data));
    start = end + 2;
  }
  return events;
}

TEST(OpenAiResponseTest, ChunkStreamGolden) {
  OpenAiChunkWriter writer("chatcmpl-j1", 1'700'000'000, "openai/gpt-4o", true);
  std::string out;
  writer.delta(out, "Hel", "", {});
  writer.delta(out, "", "think", {});
  writer.delta(out, "", "", {{0, "call_1", "lookup", ""}});
  writer.delta(out, "", "", {{0, "", "", "{\"q\":"}});
  auto response = sample_response();
  writer.finish(out, response);
  const auto events = events_of(out);
  ASSERT_EQ(events.size(), 7u);
  const json head = json::parse(
      R"({"id":"chatcmpl-j1","object":"chat.completion.chunk","created":1700000000,"model":"openai/gpt-4o"})");
  for (std::size_t i = 0; i < 4; ++i) {
    for (const auto& [key, value] : head.items()) EXPECT_EQ(events[i][key], value) << i;
    EXPECT_TRUE(events[i]["choices"][0]["finish_reason"].is_null());
  }
  EXPECT_EQ(events[0]["choices"][0]["delta"],
            json::parse(R"({"role":"assistant","content":"Hel"})"));
  EXPECT_EQ(events[1]["choices"][0]["delta"], json::parse(R"({"reasoning_content":"think"})"));
  EXPECT_EQ(events[2]["choices"][0]["delta"],
            json::parse(R"({"tool_calls":[{"index":0,"id":"call_1",
            "type":"function","function":{"name":"lookup","arguments":""}}]})"));
  EXPECT_EQ(events[3]["choices"][0]["delta"],
            json::parse(R"({"tool_calls":[{"index":0,"function":{"arguments":"{\"q\":"}}]})"));
  EXPECT_EQ(events[4]["choices"][0]["delta"], json::object());
  EXPECT_EQ(events[4]["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(events[4]["model"], "claude/claude-3-5-haiku");  // the target that answered
  EXPECT_EQ(events[5]["choices"], json::array());
  EXPECT_EQ(events[5]["usage"],
            json::parse(R"({"prompt_tokens":9,"completion_tokens":3,"total_tokens":12})"));
  EXPECT_EQ(events[6], "[DONE]");
}

TEST(OpenAiResponseTest, EmptyAnswerStillNamesTheRoleAndNoUsageUnlessAsked) {
  OpenAiChunkWriter writer("chatcmpl-j2", 1, "openai/gpt-4o", false);
  std::string out;
  auto response = sample_response();
  response.content.clear();
  writer.finish(out, response);
  const auto events = events_of(out);
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0]["choices"][0]["delta"], json::parse(R"({"role":"assistant","content":""})"));
  EXPECT_EQ(events[1]["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(events[2], "[DONE]");
}

}  // namespace
}  // namespace dispatch::formats
