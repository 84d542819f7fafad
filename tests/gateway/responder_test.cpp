#include "dispatch/gateway/responder.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "dispatch/gateway/http_text.hpp"

namespace dispatch::gateway {
namespace {

using nlohmann::json;

ResponderOptions options(Api api, bool stream) {
  ResponderOptions o;
  o.api = api;
  o.stream = stream;
  o.include_usage = false;
  o.job_id = "job1";
  o.target = {"openai", "gpt-4o"};
  o.created = 1'700'000'000;
  return o;
}

StreamEvent chunk(std::string content) {
  StreamEvent event;
  event.type = StreamEvent::Type::chunk;
  event.content = std::move(content);
  return event;
}

StreamEvent reset(std::string reason) {
  StreamEvent event;
  event.type = StreamEvent::Type::reset;
  event.reason = std::move(reason);
  return event;
}

DispatchOutcome success(std::string content) {
  DispatchResponse response;
  response.content = std::move(content);
  response.provider = "claude";
  response.model = "haiku";
  response.finish_reason = "stop";
  response.usage = {3, 2, 5};
  response.request_id = "chatcmpl-7";
  response.attempts.resize(2);
  return DispatchOutcome{"job1", std::move(response), nullptr};
}

DispatchOutcome failure(protocol::ErrorKind kind, std::string code = {}) {
  protocol::Error error;
  error.kind = kind;
  error.code = std::move(code);
  error.message = "it broke";
  return DispatchOutcome{"job1", std::nullopt, make_dispatch_error(error)};
}

// The response head without its date line, and the body.
std::pair<std::string, std::string> split(const std::string& response) {
  const auto end = response.find("\r\n\r\n");
  std::string head = response.substr(0, end + 2);
  const auto date = head.find("date: ");
  head.erase(date, head.find("\r\n", date) + 2 - date);
  return {head, response.substr(end + 4)};
}

TEST(JobResponderTest, WholeOpenAiAnswer) {
  JobResponder responder(options(Api::openai, false));
  EXPECT_EQ(responder.on_event(chunk("ignored")), "");  // events only matter for streams
  const auto [head, body] = split(responder.on_outcome(success("Hi!")));
  const std::string expected_head =
      "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: " +
      std::to_string(body.size()) +
      "\r\nx-request-id: job1\r\nx-dispatch-provider: claude\r\nx-dispatch-model: haiku\r\n"
      "x-dispatch-attempts: 2\r\n";
  EXPECT_EQ(head, expected_head);
  EXPECT_EQ(json::parse(body)["choices"][0]["message"]["content"], "Hi!");
  EXPECT_EQ(json::parse(body)["model"], "claude/haiku");
  EXPECT_TRUE(responder.complete());
  EXPECT_FALSE(responder.close_after());
  EXPECT_EQ(responder.status(), 200);
}

TEST(JobResponderTest, CostGoesInTheHeadOfAWholeAnswerAndTheEndOfAStream) {
  DispatchOutcome priced = success("Hi!");
  priced.response->cost_usd = 0.000125;
  JobResponder whole(options(Api::openai, false));
  const auto [head, body] = split(whole.on_outcome(priced));
  EXPECT_NE(head.find("\r\nx-dispatch-cost-usd: 0.000125\r\n"), std::string::npos) << head;
  JobResponder unpriced(options(Api::openai, false));
  EXPECT_EQ(unpriced.on_outcome(success("Hi!")).find("x-dispatch-cost-usd"), std::string::npos);

  for (const Api api : {Api::openai, Api::anthropic}) {
    JobResponder stream(options(api, true));
    const std::string first = stream.on_event(chunk("Hi"));
    EXPECT_EQ(first.find("x-dispatch-cost-usd"), std::string::npos);  // the head went out first
    const std::string end = stream.on_outcome(priced);
    EXPECT_NE(end.find(" splices=0 cost_usd=0.000125\n"), std::string::npos) << end;
  }
}

TEST(JobResponderTest, WholeErrorsWithTheirStatusAndRetryAfter) {
  JobResponder responder(options(Api::anthropic, false));
  const auto [head, body] =
      split(responder.on_outcome(failure(protocol::ErrorKind::queue_full, "queue_full")));
  EXPECT_EQ(head.rfind("HTTP/1.1 429 Too Many Requests\r\n", 0), 0u);
  EXPECT_NE(head.find("\r\nretry-after: 1\r\n"), std::string::npos);
  EXPECT_NE(head.find("\r\nx-request-id: job1\r\n"), std::string::npos);
  EXPECT_EQ(json::parse(body), json::parse(R"({"type":"error","request_id":"job1",
      "error":{"type":"rate_limit_error","message":"it broke"}})"));
  EXPECT_EQ(responder.status(), 429);
}

TEST(JobResponderTest, OpenAiStreamFramingByteByByte) {
  JobResponder responder(options(Api::openai, true));
  EXPECT_EQ(responder.on_event(reset("nothing sent yet")), "");
  const std::string first = responder.on_event(chunk("Hi"));
  const auto [head, body] = split(first);
  EXPECT_EQ(head,
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
            "transfer-encoding: chunked\r\ncache-control: no-cache\r\nx-accel-buffering: no\r\n"
            "x-request-id: job1\r\nx-dispatch-provider: openai\r\nx-dispatch-model: gpt-4o\r\n");
  const std::string event =
      "data: {\"id\":\"chatcmpl-job1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,"
      "\"model\":\"openai/gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","
      "\"content\":\"Hi\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n";
  char size[16];
  std::snprintf(size, sizeof size, "%zx\r\n", event.size());
  EXPECT_EQ(body, size + event + "\r\n");
  const std::string end = responder.on_outcome(success("Hi"));
  EXPECT_EQ(end.substr(end.size() - 5), "0\r\n\r\n");  // the chunked body's last chunk
  EXPECT_NE(end.find("data: [DONE]\n\n\r\n0\r\n\r\n"), std::string::npos);
  EXPECT_NE(end.find(": dispatch job=job1 answered_by=claude/haiku attempts=2 resets=0 splices=0"),
            std::string::npos);
  EXPECT_TRUE(responder.complete());
  EXPECT_FALSE(responder.close_after());
  EXPECT_FALSE(responder.stream_failed());
}

TEST(JobResponderTest, AFailureAfterBytesEndsWithTheErrorEventAndNoTerminator) {
  for (const Api api : {Api::openai, Api::anthropic}) {
    JobResponder responder(options(api, true));
    responder.on_event(chunk("Hel"));
    const std::string end = responder.on_outcome(
        failure(protocol::ErrorKind::stream_interrupted, "missing_terminator"));
    EXPECT_EQ(end.find("[DONE]"), std::string::npos);
    EXPECT_EQ(end.find("message_stop"), std::string::npos);
    EXPECT_EQ(end.find("0\r\n\r\n"), std::string::npos);  // no last chunk: a broken transfer
    if (api == Api::openai) {
      EXPECT_NE(end.find("data: {\"error\":{\"code\":\"missing_terminator\""), std::string::npos);
    } else {
      EXPECT_NE(end.find("event: error\ndata: {\"error\":{\"message\":\"it broke\","
                         "\"type\":\"api_error\"},\"request_id\":\"job1\",\"type\":\"error\"}"),
                std::string::npos);
    }
    EXPECT_TRUE(responder.stream_failed());
    EXPECT_TRUE(responder.close_after());
  }
}

TEST(JobResponderTest, AFailureBeforeAnyByteIsAnOrdinaryErrorResponse) {
  JobResponder responder(options(Api::openai, true));
  const auto [head, body] = split(responder.on_outcome(failure(protocol::ErrorKind::timeout)));
  EXPECT_EQ(head.rfind("HTTP/1.1 504 Gateway Timeout\r\n", 0), 0u);
  EXPECT_EQ(json::parse(body)["error"]["type"], "timeout_error");
  EXPECT_FALSE(responder.stream_failed());
}

TEST(JobResponderTest, DivergenceEndsTheStreamAndAsksToCancelTheJob) {
  JobResponder responder(options(Api::openai, true));
  responder.on_event(chunk("reply to: "));
  responder.on_event(reset("fallback to claude/x: network"));
  EXPECT_EQ(responder.on_event(chunk("reply ")), "");
  const std::string end = responder.on_event(chunk("from"));
  EXPECT_NE(end.find("\"code\":\"stream_diverged\""), std::string::npos);
  EXPECT_NE(end.find("fallback to claude/x: network"), std::string::npos);
  EXPECT_TRUE(responder.diverged());
  EXPECT_TRUE(responder.cancel_job());
  EXPECT_TRUE(responder.complete());
  EXPECT_EQ(responder.on_outcome(success("reply from x")), "");  // nothing after the end
}

TEST(JobResponderTest, SplicedStreamSendsOnlyTheNewText) {
  JobResponder responder(options(Api::anthropic, true));
  const std::string start = responder.on_event(chunk("reply "));
  EXPECT_NE(start.find("event: message_start"), std::string::npos);
  EXPECT_NE(start.find("event: ping"), std::string::npos);
  responder.on_event(reset("retry"));
  EXPECT_EQ(responder.on_event(chunk("reply ")), "");
  const std::string more = responder.on_event(chunk("to you"));
  EXPECT_NE(more.find("\"text\":\"to you\""), std::string::npos);
  EXPECT_EQ(more.find("message_start"), std::string::npos);
  const std::string end = responder.on_outcome(success("reply to you"));
  EXPECT_NE(end.find("resets=1 splices=1"), std::string::npos);
  EXPECT_NE(end.find("event: message_stop"), std::string::npos);
  EXPECT_EQ(responder.splicer().splices(), 1u);
}

TEST(JobResponderTest, Http10StreamsEndByClosing) {
  auto o = options(Api::openai, true);
  o.http10 = true;
  JobResponder responder(o);
  const std::string first = responder.on_event(chunk("Hi"));
  EXPECT_EQ(first.find("transfer-encoding"), std::string::npos);
  EXPECT_NE(first.find("connection: close"), std::string::npos);
  EXPECT_NE(first.find("\r\n\r\ndata: {"), std::string::npos);  // no chunk framing
  const std::string end = responder.on_outcome(success("Hi"));
  EXPECT_EQ(end.substr(end.size() - 14), "data: [DONE]\n\n");
  EXPECT_TRUE(responder.close_after());
}

TEST(JobResponderTest, AnEmptyStreamedAnswerStillHasItsHeadAndEnd) {
  JobResponder responder(options(Api::openai, true));
  const std::string all = responder.on_outcome(success(""));
  EXPECT_EQ(all.rfind("HTTP/1.1 200 OK\r\n", 0), 0u);
  EXPECT_NE(all.find("\"delta\":{\"role\":\"assistant\",\"content\":\"\"}"), std::string::npos);
  EXPECT_NE(all.find("data: [DONE]"), std::string::npos);
}

TEST(HttpTextTest, HeaderValuesCannotSplitTheHead) {
  const std::string head = render_head(
      ResponseHead{200, "application/json", 0, true, false, {{"x-dispatch-model", "a\r\nb: c"}}});
  EXPECT_NE(head.find("x-dispatch-model: a??b: c\r\n"), std::string::npos);
  std::string out;
  append_chunk(out, "");
  EXPECT_EQ(out, "");
  append_chunk(out, std::string(300, 'x'));
  EXPECT_EQ(out.substr(0, 5), "12c\r\n");
}

}  // namespace
}  // namespace dispatch::gateway
