#include "dispatch/formats/anthropic.hpp"

#include <gtest/gtest.h>

#include "dispatch/formats/json_text.hpp"

namespace dispatch::formats {
namespace {

json simple_body() {
  return json::parse(R"({"model":"claude/claude-3-5-haiku","max_tokens":64,
                         "messages":[{"role":"user","content":"Hi"}]})");
}

RequestError error_of(const json& body) {
  auto parsed = parse_anthropic_messages(body);
  EXPECT_FALSE(parsed.ok()) << body.dump();
  return parsed.ok() ? RequestError{} : parsed.error();
}

// The body of the whole surface, parsed once for the tests below.
ChatRequest whole_surface() {
  const json body = json::parse(R"({
    "model": "sonnet", "max_tokens": 1024,
    "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
    "messages": [
      {"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "aGVsbG8="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
        {"type": "text", "text": "Weather in Paris?"}]},
      {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "Use the tool.", "signature": "sig"},
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}]},
      {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "18C"}]},
        {"type": "text", "text": "And tomorrow?"}]}
    ],
    "tools": [{"name": "weather", "description": "Weather now",
               "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
    "tool_choice": {"type": "any"},
    "stop_sequences": ["\n\nHuman:"], "temperature": 0.5, "top_p": 0.9, "top_k": 5,
    "thinking": {"type": "enabled", "budget_tokens": 2048},
    "metadata": {"user_id": "u-1"}, "stream": true, "timeout_ms": 5000,
    "fallbacks": ["openai/gpt-4o"]
  })");
  auto parsed = parse_anthropic_messages(body);
  EXPECT_TRUE(parsed.ok()) << parsed.error().message;
  return parsed.ok() ? *parsed : ChatRequest{};
}

TEST(AnthropicRequestTest, TheWholeSurface) {
  const std::optional<ChatRequest> parsed = whole_surface();
  const protocol::Request& r = parsed->request;
  EXPECT_EQ(parsed->model, "sonnet");
  EXPECT_TRUE(parsed->stream);
  ASSERT_EQ(r.messages.size(), 5u);
  EXPECT_EQ(r.messages[0].role, "system");
  EXPECT_EQ(r.messages[0].content, "Be brief.\nBe kind.");
  EXPECT_EQ(r.messages[1].role, "user");
  EXPECT_EQ(r.messages[1].content, "Weather in Paris?");
  EXPECT_EQ(r.messages[1].images, (std::vector<std::string>{"data:image/png;base64,aGVsbG8=",
                                                            "https://example.com/cat.png"}));
  EXPECT_EQ(r.messages[2].role, "assistant");
  EXPECT_EQ(r.messages[2].thinking, "Use the tool.");
  EXPECT_EQ(r.messages[2].content, "Let me check.");
  EXPECT_EQ(r.messages[2].tool_calls,
            (std::vector<protocol::ToolCall>{{"toolu_1", "weather", R"({"city":"Paris"})"}}));
  // The tool result comes first, as a tool message named after its tool_use; then the text.
  EXPECT_EQ(r.messages[3].role, "tool");
  EXPECT_EQ(r.messages[3].tool_call_id, "toolu_1");
  EXPECT_EQ(r.messages[3].tool_name, "weather");
  EXPECT_EQ(r.messages[3].content, "18C");
  EXPECT_EQ(r.messages[4].role, "user");
  EXPECT_EQ(r.messages[4].content, "And tomorrow?");
  ASSERT_EQ(r.tools.size(), 1u);
  EXPECT_EQ(r.tools[0].name, "weather");
  EXPECT_EQ(r.tools[0].parameters, R"({"properties":{"city":{"type":"string"}},"type":"object"})");
  EXPECT_EQ(r.tool_choice, "required");
  EXPECT_EQ(r.stop, std::vector<std::string>{"\n\nHuman:"});
  EXPECT_EQ(r.max_tokens, 1024u);
  EXPECT_EQ(r.temperature, 0.5);
  EXPECT_EQ(r.top_p, 0.9);
  EXPECT_EQ(r.think, true);
  EXPECT_EQ(r.thinking_budget, 2048u);
  EXPECT_EQ(r.metadata.at("user_id"), "u-1");
  EXPECT_EQ(r.timeout_ms, 5000u);
  EXPECT_EQ(parsed->fallbacks, std::vector<std::string>{"openai/gpt-4o"});
}

TEST(AnthropicRequestTest, ToolChoiceModes) {
  const std::pair<const char*, std::pair<std::string, std::string>> cases[] = {
      {R"({"type":"auto"})", {"auto", ""}},
      {R"({"type":"none"})", {"none", ""}},
      {R"({"type":"tool","name":"weather"})", {"function", "weather"}},
  };
  for (const auto& [choice, expected] : cases) {
    json body = simple_body();
    body["tool_choice"] = json::parse(choice);
    auto parsed = parse_anthropic_messages(body);
    ASSERT_TRUE(parsed.ok()) << choice;
    EXPECT_EQ(parsed->request.tool_choice, expected.first);
    EXPECT_EQ(parsed->request.tool_choice_function, expected.second);
  }
}

TEST(AnthropicRequestTest, RefusalsNameTheirField) {
  const std::pair<const char*, const char*> cases[] = {
      {R"({"model":"m","messages":[{"role":"user","content":"x"}]})", "max_tokens"},
      {R"({"max_tokens":5,"messages":[{"role":"user","content":"x"}]})", "model"},
      {R"({"model":"m","max_tokens":0,"messages":[{"role":"user","content":"x"}]})", "max_tokens"},
      {R"({"model":"m","max_tokens":5,"temperature":1.5,"messages":[{"role":"user","content":"x"}]})",
       "temperature"},
      {R"({"model":"m","max_tokens":5,"messages":[{"role":"system","content":"x"}]})",
       "messages[0].role"},
      {R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"document"}]}]})",
       "messages[0].content[0].type"},
      {R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"tool_use","id":"a","name":"b"}]}]})",
       "messages[0].content[0].type"},
      {R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"file"}}]}]})",
       "messages[0].content[0].source.type"},
      {R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"image"}]}]}]})",
       "messages[0].content[0].content[0].type"},
      {R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image,png","data":"aGVsbG8="}}]}]})",
       "messages[0].content[0].source.data"},
      {R"({"model":"m","max_tokens":5,"messages":[{"role":"user","content":[]}]})",
       "messages[0].content"},
      {R"({"model":"m","max_tokens":5,"system":7,"messages":[{"role":"user","content":"x"}]})",
       "system"},
      {R"({"model":"m","max_tokens":5,"tools":[{"name":"x"}],"messages":[{"role":"user","content":"x"}]})",
       "tools[0].input_schema"},
      {R"({"model":"m","max_tokens":5,"tools":[{"type":"web_search_20250305","name":"x"}],"messages":[{"role":"user","content":"x"}]})",
       "tools[0].type"},
      {R"({"model":"m","max_tokens":5,"tool_choice":{"type":"maybe"},"messages":[{"role":"user","content":"x"}]})",
       "tool_choice.type"},
      {R"({"model":"m","max_tokens":5,"thinking":{"type":"enabled","budget_tokens":-1},"messages":[{"role":"user","content":"x"}]})",
       "thinking.budget_tokens"},
      {R"({"model":"m","max_tokens":5,"stop_sequences":"x","messages":[{"role":"user","content":"x"}]})",
       "stop_sequences"},
  };
  for (const auto& [text, param] : cases) {
    const RequestError error = error_of(json::parse(text));
    EXPECT_EQ(error.param, param) << text << " -> " << error.message;
    EXPECT_EQ(error.status, 400);
  }
}

DispatchResponse sample_response() {
  DispatchResponse response;
  response.content = "It is sunny.";
  response.thinking = "Check.";
  response.tool_calls.push_back({"call_1", "weather", R"({"city":"Paris"})"});
  response.provider = "openai";
  response.model = "gpt-4o";
  response.usage = {12, 7, 19};
  response.finish_reason = "tool_calls";
  response.raw_finish_reason = "tool_calls";
  response.request_id = "chatcmpl-5";
  response.job_id = "j1";
  return response;
}

TEST(AnthropicResponseTest, MessageGolden) {
  EXPECT_EQ(anthropic_message_body(sample_response()), json::parse(R"({
    "id": "msg_j1", "type": "message", "role": "assistant", "model": "openai/gpt-4o",
    "content": [{"type": "thinking", "thinking": "Check.", "signature": ""},
                {"type": "text", "text": "It is sunny."},
                {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}}],
    "stop_reason": "tool_use", "stop_sequence": null,
    "usage": {"input_tokens": 12, "output_tokens": 7}})"));
}

TEST(AnthropicResponseTest, StopReasons) {
  DispatchResponse r;
  const std::tuple<const char*, const char*, const char*> cases[] = {
      {"stop", "stop", "end_turn"},
      {"stop", "stop_sequence", "stop_sequence"},
      {"length", "length", "max_tokens"},
      {"length", "max_tokens", "max_tokens"},
      {"tool_calls", "", "tool_use"},
      {"content_filter", "", "refusal"},
      {"", "", "end_turn"},
  };
  for (const auto& [finish, raw, expected] : cases) {
    r.finish_reason = finish;
    r.raw_finish_reason = raw;
    EXPECT_EQ(anthropic_stop_reason(r), expected) << finish << "/" << raw;
  }
}

std::vector<std::pair<std::string, json>> events_of(const std::string& stream) {
  std::vector<std::pair<std::string, json>> events;
  std::size_t start = 0;
  while (start < stream.size()) {
    const auto end = stream.find("\n\n", start);
    const std::string event = stream.substr(start, end - start);
    const auto newline = event.find('\n');
    EXPECT_EQ(event.rfind("event: ", 0), 0u) << event;
    EXPECT_EQ(event.compare(newline + 1, 6, "data: "), 0) << event;
    const auto data = json::parse(event.substr(newline + 7));
    EXPECT_EQ(data["type"], event.substr(7, newline - 7));  // the event name is the data's type
    events.emplace_back(event.substr(7, newline - 7), data);
    start = end + 2;
  }
  return events;
}

TEST(AnthropicResponseTest, StreamGolden) {
  AnthropicStreamWriter writer("msg_j1", "openai/gpt-4o");
  std::string out;
  writer.start(out);
  writer.delta(out, "", "Check.", {});
  writer.delta(out, "It is ", "", {});
  writer.delta(out, "sunny.", "", {});
  writer.delta(out, "", "", {{0, "call_1", "weather", ""}});
  writer.delta(out, "", "", {{0, "", "", "{\"city\":"}});
  writer.delta(out, "", "", {{0, "", "", "\"Paris\"}"}});
  writer.finish(out, sample_response());
  const auto events = events_of(out);
  std::vector<std::string> names;
  for (const auto& [name, data] : events) names.push_back(name);
  EXPECT_EQ(names, (std::vector<std::string>{
                       "message_start", "ping", "content_block_start", "content_block_delta",
                       "content_block_stop", "content_block_start", "content_block_delta",
                       "content_block_delta", "content_block_stop", "content_block_start",
                       "content_block_delta", "content_block_delta", "content_block_stop",
                       "message_delta", "message_stop"}));
  EXPECT_EQ(events[0].second["message"]["id"], "msg_j1");
  EXPECT_EQ(events[0].second["message"]["content"], json::array());
  EXPECT_EQ(events[2].second, json::parse(R"({"type":"content_block_start","index":0,
            "content_block":{"type":"thinking","thinking":"","signature":""}})"));
  EXPECT_EQ(events[3].second["delta"],
            json::parse(R"({"type":"thinking_delta","thinking":"Check."})"));
  EXPECT_EQ(events[5].second["index"], 1);
  EXPECT_EQ(events[7].second["delta"], json::parse(R"({"type":"text_delta","text":"sunny."})"));
  EXPECT_EQ(events[9].second, json::parse(R"({"type":"content_block_start","index":2,
            "content_block":{"type":"tool_use","id":"call_1","name":"weather","input":{}}})"));
  EXPECT_EQ(events[10].second["delta"],
            json::parse(R"({"type":"input_json_delta","partial_json":"{\"city\":"})"));
  EXPECT_EQ(events[12].second["index"], 2);
  EXPECT_EQ(events[13].second, json::parse(R"({"type":"message_delta",
            "delta":{"stop_reason":"tool_use","stop_sequence":null},
            "usage":{"input_tokens":12,"output_tokens":7}})"));
}

TEST(AnthropicResponseTest, AnEmptyStreamStillHasATextBlock) {
  AnthropicStreamWriter writer("msg_x", "m/m");
  std::string out;
  writer.start(out);
  DispatchResponse response;
  response.finish_reason = "stop";
  writer.finish(out, response);
  const auto events = events_of(out);
  ASSERT_EQ(events.size(), 6u);
  EXPECT_EQ(events[2].second["content_block"], json::parse(R"({"type":"text","text":""})"));
  EXPECT_EQ(events[3].first, "content_block_stop");
}

}  // namespace
}  // namespace dispatch::formats
