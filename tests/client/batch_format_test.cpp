#include <gtest/gtest.h>

#include "dispatch/cli/batch.hpp"

namespace dispatch::cli {
namespace {

using nlohmann::json;

std::string line_with_body(const json& body, const std::string& custom_id = "req-1") {
  return json{
      {"custom_id", custom_id}, {"method", "POST"}, {"url", "/v1/chat/completions"}, {"body", body}}
      .dump();
}

json simple_body(const std::string& model = "openai/gpt-4o-mini") {
  return json{{"model", model}, {"messages", json::array({{{"role", "user"}, {"content", "Hi"}}})}};
}

std::string reason_of(const std::string& line) {
  auto parsed = parse_batch_line(line, 7);
  return parsed ? "" : parsed.error().reason;
}

TEST(BatchLineTest, ParsesAFullOpenAiChatBody) {
  json body{
      {"model", "openai-compatible/meta-llama/Llama-3-8B"},
      {"messages",
       json::array(
           {{{"role", "developer"}, {"content", "Be brief."}},
            {{"role", "user"},
             {"content",
              json::array({{{"type", "text"}, {"text", "What is in this image?"}},
                           {{"type", "image_url"},
                            {"image_url", {{"url", "data:image/png;base64,aGVsbG8="}}}}})}},
            {{"role", "assistant"},
             {"content", nullptr},
             {"tool_calls",
              json::array({{{"id", "call_1"},
                            {"type", "function"},
                            {"function", {{"name", "lookup"}, {"arguments", "{\"q\":1}"}}}}})}},
            {{"role", "tool"}, {"tool_call_id", "call_1"}, {"content", "42"}}})},
      {"temperature", 0.2},
      {"max_completion_tokens", 300},
      {"top_p", 0.5},
      {"stop", "END"},
      {"stream", true},
      {"tools", json::array({{{"type", "function"},
                              {"function",
                               {{"name", "lookup"},
                                {"description", "Look it up"},
                                {"parameters", {{"type", "object"}}}}}}})},
      {"tool_choice", {{"type", "function"}, {"function", {{"name", "lookup"}}}}},
      {"response_format", {{"type", "json_object"}}},
      {"fallbacks", json::array({"claude/claude-3-5-haiku", "ollama/"})},
      {"timeout_ms", 9000},
      {"retry_count", 1}};
  auto parsed = parse_batch_line(line_with_body(body, "abc"), 3);
  ASSERT_TRUE(parsed.ok()) << parsed.error().reason;
  const auto& item = *parsed;
  EXPECT_EQ(item.line_number, 3u);
  EXPECT_EQ(item.custom_id, "abc");
  const auto& r = item.request;
  EXPECT_EQ(r.provider, "openai-compatible");
  EXPECT_EQ(r.model, "meta-llama/Llama-3-8B");
  ASSERT_EQ(r.messages.size(), 4u);
  EXPECT_EQ(r.messages[0].role, "system");
  EXPECT_EQ(r.messages[1].content, "What is in this image?");
  // The data: URL is kept whole: its declared media type helps the worker when sniffing fails.
  EXPECT_EQ(r.messages[1].images, std::vector<std::string>{"data:image/png;base64,aGVsbG8="});
  ASSERT_EQ(r.messages[2].tool_calls.size(), 1u);
  EXPECT_EQ(r.messages[2].tool_calls[0].arguments, "{\"q\":1}");
  EXPECT_EQ(r.messages[3].tool_call_id, "call_1");
  EXPECT_EQ(r.temperature, 0.2);
  EXPECT_EQ(r.max_tokens, 300u);
  EXPECT_EQ(r.top_p, 0.5);
  EXPECT_EQ(r.stop, std::vector<std::string>{"END"});
  EXPECT_FALSE(r.stream);  // a batch line is answered whole
  ASSERT_EQ(r.tools.size(), 1u);
  EXPECT_EQ(r.tools[0].parameters, "{\"type\":\"object\"}");
  EXPECT_EQ(r.tool_choice, "function");
  EXPECT_EQ(r.tool_choice_function, "lookup");
  EXPECT_EQ(r.response_format, "json_object");
  ASSERT_TRUE(r.fallbacks.has_value());
  EXPECT_EQ(*r.fallbacks, (std::vector<protocol::Target>{{"claude", "claude-3-5-haiku"}}));
  EXPECT_EQ(r.timeout_ms, 9000u);
  EXPECT_EQ(r.retry_count, 1u);
  EXPECT_EQ(r.metadata.at("custom_id"), "abc");
}

TEST(BatchLineTest, MaxTokensAndStopArray) {
  auto body = simple_body();
  body["max_tokens"] = 50;
  body["stop"] = json::array({"a", "b"});
  auto parsed = parse_batch_line(line_with_body(body), 1);
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->request.max_tokens, 50u);
  EXPECT_EQ(parsed->request.stop, (std::vector<std::string>{"a", "b"}));
}

TEST(BatchLineTest, InvalidLinesSayWhy) {
  EXPECT_EQ(reason_of("{not json").rfind("invalid JSON: ", 0), 0u);
  EXPECT_EQ(reason_of("[1,2]"), "not a JSON object");
  EXPECT_EQ(reason_of(R"({"method":"POST"})"), "missing custom_id (a non-empty string)");
  EXPECT_EQ(reason_of(R"({"custom_id":"","method":"POST"})"),
            "missing custom_id (a non-empty string)");
  EXPECT_EQ(reason_of(R"({"custom_id":5})"), "missing custom_id (a non-empty string)");
  EXPECT_EQ(reason_of(R"({"custom_id":"a","method":"GET","url":"/v1/chat/completions","body":{}})"),
            "custom_id 'a': method must be \"POST\"");
  EXPECT_EQ(reason_of(R"({"custom_id":"a","method":"POST","url":"/v1/embeddings","body":{}})"),
            "custom_id 'a': url must be \"/v1/chat/completions\"");
  EXPECT_EQ(reason_of(R"({"custom_id":"a","method":"POST","url":"/v1/chat/completions"})"),
            "custom_id 'a': missing body");
  EXPECT_NE(reason_of(line_with_body(simple_body("gpt-4o"))).find("body.model"), std::string::npos);
  EXPECT_NE(reason_of(line_with_body(simple_body("/gpt-4o"))).find("empty provider"),
            std::string::npos);
  auto body = simple_body();
  body["messages"] = json::array();
  EXPECT_EQ(reason_of(line_with_body(body)),
            "custom_id 'req-1': body.messages must be a non-empty array");
  body = simple_body();
  body["temperature"] = "hot";
  EXPECT_EQ(reason_of(line_with_body(body)),
            "custom_id 'req-1': body.temperature must be a number");
  body["temperature"] = 3.5;
  EXPECT_EQ(reason_of(line_with_body(body)),
            "custom_id 'req-1': body.temperature must be between 0 and 2");
  body = simple_body();
  body["max_tokens"] = -1;
  EXPECT_EQ(reason_of(line_with_body(body)),
            "custom_id 'req-1': body.max_tokens must be a non-negative integer");
  // Found by fuzzing (tests/fuzz/corpus/batch_line/crash-max-tokens-0): values the protocol
  // refuses were accepted here and the job bounced by the broker as malformed.
  for (const char* key : {"max_tokens", "max_completion_tokens", "timeout_ms"}) {
    body = simple_body();
    body[key] = 0;
    EXPECT_EQ(reason_of(line_with_body(body)),
              std::string("custom_id 'req-1': body.") + key + " must be at least 1");
  }
  std::string deep;
  for (int i = 0; i < 100000; ++i) deep += "{\"a\":";
  deep += "1" + std::string(100000, '}');
  EXPECT_EQ(reason_of(R"({"custom_id":"x","method":"POST","url":"/v1/chat/completions",)"
                      R"("body":{"model":"a/b","messages":[{"role":"user","content":"hi"}],)"
                      R"("metadata":{"k":)" +
                      deep + "}}}"),
            "body nests deeper than 64 levels")
      << "refused, where serialising it overflowed the stack";
  body = simple_body();
  body["messages"][0]["role"] = "robot";
  EXPECT_NE(reason_of(line_with_body(body)).find("role 'robot'"), std::string::npos);
  body = simple_body();
  body["messages"][0]["content"] =
      json::array({{{"type", "image_url"}, {"image_url", {{"url", "ftp://x/cat.png"}}}}});
  EXPECT_EQ(reason_of(line_with_body(body)),
            "custom_id 'req-1': body.messages[0].content[0].image_url.url must be a data: URL or "
            "an http(s) URL");
  body["messages"][0]["content"][0]["image_url"]["url"] =
      "https://x/cat.png";  // providers fetch it
  EXPECT_EQ(reason_of(line_with_body(body)), "");
  body = simple_body();
  body["n"] = 2;
  EXPECT_NE(reason_of(line_with_body(body)).find("n = 1"), std::string::npos);
  body = simple_body();
  body["tool_choice"] = "sometimes";
  EXPECT_NE(reason_of(line_with_body(body)).find("tool_choice"), std::string::npos);
}

DispatchResponse sample_response() {
  DispatchResponse response;
  response.content = "Hello!";
  response.provider = "openai";
  response.model = "gpt-4o-mini";
  response.usage = {9, 3, 12};
  response.finish_reason = "stop";
  response.request_id = "chatcmpl-xyz";
  response.created_at = 1'700'000'123;
  response.job_id = "0123456789abcdef0123456789abcdef";
  return response;
}

TEST(BatchOutputTest, SuccessLineHasTheBatchApiShape) {
  const auto text = format_success_line(12, "req-12", sample_response());
  ASSERT_EQ(text.back(), '\n');
  EXPECT_EQ(text.find('\n'), text.size() - 1);  // exactly one line
  const auto line = json::parse(text);
  EXPECT_EQ(line["id"], "batch_req_12");
  EXPECT_EQ(line["custom_id"], "req-12");
  EXPECT_TRUE(line["error"].is_null());
  EXPECT_EQ(line["response"]["status_code"], 200);
  EXPECT_EQ(line["response"]["request_id"], "0123456789abcdef0123456789abcdef");
  const auto& body = line["response"]["body"];
  EXPECT_EQ(body["id"], "chatcmpl-xyz");
  EXPECT_EQ(body["object"], "chat.completion");
  EXPECT_EQ(body["created"], 1'700'000'123);
  EXPECT_EQ(body["model"], "openai/gpt-4o-mini");
  EXPECT_EQ(body["choices"][0]["index"], 0);
  EXPECT_EQ(body["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(body["choices"][0]["message"]["content"], "Hello!");
  EXPECT_EQ(body["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(body["usage"],
            (json{{"prompt_tokens", 9}, {"completion_tokens", 3}, {"total_tokens", 12}}));
}

TEST(BatchOutputTest, ToolCallsInTheMessage) {
  auto response = sample_response();
  response.content.clear();
  response.finish_reason = "tool_calls";
  response.tool_calls.push_back({"call_9", "lookup", "{\"q\":2}"});
  const auto body = json::parse(format_success_line(1, "t", response))["response"]["body"];
  const auto& message = body["choices"][0]["message"];
  EXPECT_TRUE(message["content"].is_null());
  EXPECT_EQ(message["tool_calls"][0]["id"], "call_9");
  EXPECT_EQ(message["tool_calls"][0]["type"], "function");
  EXPECT_EQ(message["tool_calls"][0]["function"]["name"], "lookup");
  EXPECT_EQ(message["tool_calls"][0]["function"]["arguments"], "{\"q\":2}");
}

TEST(BatchOutputTest, ErrorLineWithAndWithoutProviderStatus) {
  protocol::Error wire;
  wire.kind = ErrorKind::invalid_request;
  wire.message = "bad temperature";
  wire.status = 400;
  wire.code = "invalid_value";
  const auto with_status =
      json::parse(format_error_line(5, "r5", *make_dispatch_error(wire), "job-5"));
  EXPECT_EQ(with_status["id"], "batch_req_5");
  EXPECT_EQ(with_status["custom_id"], "r5");
  EXPECT_EQ(with_status["error"],
            (json{{"code", "invalid_request"}, {"message", "bad temperature"}}));
  EXPECT_EQ(with_status["response"]["status_code"], 400);
  EXPECT_EQ(with_status["response"]["request_id"], "job-5");
  EXPECT_EQ(with_status["response"]["body"]["error"]["code"], "invalid_value");

  wire.status = 0;
  wire.kind = ErrorKind::unsupported_provider;
  const auto without = json::parse(format_error_line(6, "r6", *make_dispatch_error(wire)));
  EXPECT_TRUE(without["response"].is_null());
  EXPECT_EQ(without["error"]["code"], "unsupported_provider");
}

TEST(ResumeScanTest, CollectsCustomIdsAndDetectsATornTail) {
  const std::string complete = R"({"custom_id":"a","error":null})"
                               "\n"
                               R"({"custom_id":"b","error":null})"
                               "\n";
  const std::string torn = R"({"custom_id":"c","err)";
  auto state = scan_output_text(complete + torn);
  EXPECT_EQ(state.done, (std::unordered_set<std::string>{"a", "b"}));
  EXPECT_TRUE(state.torn_tail);
  EXPECT_EQ(state.valid_bytes, complete.size());

  auto clean = scan_output_text(complete);
  EXPECT_FALSE(clean.torn_tail);
  EXPECT_EQ(clean.valid_bytes, complete.size());

  auto empty = scan_output_text("");
  EXPECT_TRUE(empty.done.empty());
  EXPECT_FALSE(empty.torn_tail);

  auto junk = scan_output_text(
      "garbage\n\n"
      R"({"no_id":1})"
      "\n");
  EXPECT_EQ(junk.unreadable_lines, 2u);
  EXPECT_TRUE(junk.done.empty());
}

TEST(ResumeScanTest, ATornTailThatHappensToBeValidJsonIsStillTorn) {
  // A complete object without its newline may be the prefix of a longer line: never trust it.
  auto state = scan_output_text(R"({"custom_id":"a"})");
  EXPECT_TRUE(state.torn_tail);
  EXPECT_TRUE(state.done.empty());
  EXPECT_EQ(state.valid_bytes, 0u);
}

TEST(ProgressTest, PlainLineAndTtyBar) {
  BatchCounters counters;
  counters.total = 1000;
  counters.succeeded = 400;
  counters.failed = 50;
  counters.skipped = 40;
  counters.invalid = 10;
  counters.in_flight = 64;
  counters.elapsed_seconds = 4.5;
  EXPECT_EQ(format_progress(counters, false),
            "progress 500/1000 (50%) ok 400 failed 50 in_flight 64 rate 100.0/s eta 5s\n");
  EXPECT_EQ(format_progress(counters, true),
            "\r\x1b[K[############------------] 500/1000  50% | ok 400 | failed 50 | "
            "in flight 64 | 100.0/s | ETA 5s");
}

TEST(ProgressTest, EtaUnknownUntilSomethingFinished) {
  BatchCounters counters;
  counters.total = 10;
  EXPECT_NE(format_progress(counters, false).find("eta --"), std::string::npos);
  EXPECT_EQ(format_eta(59.4), "59s");
  EXPECT_EQ(format_eta(61), "1m01s");
  EXPECT_EQ(format_eta(7322), "2h02m");
  EXPECT_EQ(format_eta(-1), "--");
}

TEST(ProgressTest, Summary) {
  BatchCounters counters;
  counters.total = 1000;
  counters.succeeded = 940;
  counters.failed = 40;
  counters.invalid = 20;
  counters.prompt_tokens = 5000;
  counters.completion_tokens = 7000;
  counters.elapsed_seconds = 2.0;
  EXPECT_EQ(format_summary(counters),
            "batch summary: total 1000 | succeeded 940 | failed 40 | skipped 0 (already done) | "
            "invalid 20\n"
            "tokens: prompt 5000 | completion 7000 | total 12000\n"
            "cost: unknown (no price for any of the 940 answers)\n"
            "wall time 2.00 s | 490.0 jobs/s\n");
  counters.incomplete = 3;
  EXPECT_NE(format_summary(counters).find("| incomplete 3"), std::string::npos);
  counters.cost_usd = 0.0123456789;
  counters.priced = 900;
  EXPECT_NE(format_summary(counters).find("cost: 0.0123457 USD (900 of 940 answers priced)\n"),
            std::string::npos);
}

TEST(BatchOutputTest, CostGoesUnderTheExtensionField) {
  EXPECT_FALSE(json::parse(format_success_line(1, "t", sample_response())).contains("x_dispatch"));
  auto response = sample_response();
  response.cost_usd = 0.0000123;
  const auto line = json::parse(format_success_line(1, "t", response));
  EXPECT_DOUBLE_EQ(line["x_dispatch"]["cost_usd"].get<double>(), 0.0000123);
}

}  // namespace
}  // namespace dispatch::cli
