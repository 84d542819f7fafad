// The HTTP layer in-process, against a scripted broker link, driven over raw sockets: the SSE
// framing byte by byte, keep-alive and pipelining, and every hostile case.

#include "dispatch/gateway/server.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <thread>

#include "dispatch/formats/status_json.hpp"
#include "dispatch/gateway/auth.hpp"
#include "raw_http.hpp"
#include "scripted_link.hpp"

namespace dispatch::gateway {
namespace {

using nlohmann::json;
using test::HttpResponse;
using test::post_request;
using test::RawConnection;
using test::ScriptedLink;

const std::string kChat =
    R"({"model":"openai/gpt-4o","messages":[{"role":"user","content":"Hi"}]})";
const std::string kStream =
    R"({"model":"openai/gpt-4o","stream":true,"messages":[{"role":"user","content":"Hi"}]})";

class GatewayServerTest : public ::testing::Test {
 protected:
  void start(GatewayConfig config = {}) {
    ServerOptions options;
    options.host = "127.0.0.1";
    options.port = 0;
    options.threads = 2;
    server_ = std::make_unique<Server>(options, config, link_);
    port_ = server_->start();
  }

  void TearDown() override {
    if (!server_) return;
    server_->stop();
    link_.forget_jobs();  // their callbacks hold executors of the server's io_context
    server_.reset();
  }

  // Polls `condition` for up to 10 s.
  template <class Condition>
  static bool eventually(Condition condition) {
    for (int i = 0; i < 1000; ++i) {
      if (condition()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return condition();
  }

  ScriptedLink link_;  // outlives the server: late callbacks land in a stopped server
  std::unique_ptr<Server> server_;
  uint16_t port_ = 0;
};

TEST_F(GatewayServerTest, AnswersAndKeepsTheConnectionAlive) {
  start();
  RawConnection client(port_);
  ASSERT_TRUE(client.valid());
  for (int round = 0; round < 2; ++round) {
    client.send(post_request("/v1/chat/completions", kChat));
    const auto job = link_.job(round);
    ASSERT_TRUE(job);
    EXPECT_EQ(job->request.provider, "openai");
    EXPECT_EQ(job->request.messages[0].content, "Hi");
    EXPECT_FALSE(job->on_event);  // a whole answer asks for no chunks
    job->on_done(ScriptedLink::success(*job, "Hello!"));
    const auto response = client.read_response();
    ASSERT_TRUE(response);
    EXPECT_EQ(response->status, 200);
    EXPECT_EQ(response->headers.at("x-request-id"), job->id);
    EXPECT_EQ(json::parse(response->body)["choices"][0]["message"]["content"], "Hello!");
  }
  EXPECT_FALSE(client.closed());
}

TEST_F(GatewayServerTest, SseFramingByteByByte) {
  start();
  RawConnection client(port_);
  client.send(post_request("/v1/chat/completions", kStream));
  const auto job = link_.job(0);
  ASSERT_TRUE(job && job->on_event);
  job->on_event(ScriptedLink::chunk("Hel"));
  ASSERT_TRUE(client.read_until("\"Hel\""));
  job->on_event(ScriptedLink::chunk("lo"));
  ASSERT_TRUE(client.read_until("\"lo\""));
  job->on_done(ScriptedLink::success(*job, "Hello"));
  const auto response = client.read_response();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->headers.at("content-type"), "text/event-stream; charset=utf-8");
  EXPECT_TRUE(response->complete);
  // Every chunk of the transfer is whole events: "<hex size>\r\ndata: {...}\n\n\r\n".
  std::string_view raw = response->raw_body;
  std::vector<std::string> events;
  while (!raw.empty()) {
    const std::size_t line = raw.find("\r\n");
    const std::size_t size = std::stoul(std::string(raw.substr(0, line)), nullptr, 16);
    if (size == 0) {
      EXPECT_EQ(raw, "0\r\n\r\n");
      break;
    }
    const std::string_view data = raw.substr(line + 2, size);
    EXPECT_EQ(data.substr(data.size() - 2), "\n\n");
    EXPECT_EQ(raw.substr(line + 2 + size, 2), "\r\n");
    events.emplace_back(data);
    raw.remove_prefix(line + 2 + size + 2);
  }
  ASSERT_EQ(events.size(), 3u);  // Hel; lo; the end (comment, finish chunk, [DONE])
  EXPECT_EQ(events[0].rfind("data: {\"id\":\"chatcmpl-job-0\"", 0), 0u);
  EXPECT_NE(events[0].find("\"delta\":{\"role\":\"assistant\",\"content\":\"Hel\"}"),
            std::string::npos);
  EXPECT_NE(events[1].find("\"delta\":{\"content\":\"lo\"}"), std::string::npos);
  EXPECT_NE(events[2].find("\"finish_reason\":\"stop\""), std::string::npos);
  EXPECT_EQ(events[2].substr(events[2].size() - 14), "data: [DONE]\n\n");
}

TEST_F(GatewayServerTest, AFailureMidStreamEndsWithTheErrorEventAndABrokenTransfer) {
  start();
  RawConnection client(port_);
  client.send(post_request("/v1/messages", R"({"model":"claude/x","max_tokens":9,"stream":true,)"
                                           R"("messages":[{"role":"user","content":"Hi"}]})"));
  const auto job = link_.job(0);
  ASSERT_TRUE(job);
  job->on_event(ScriptedLink::chunk("Hel"));
  ASSERT_TRUE(client.read_until("text_delta"));
  job->on_done(ScriptedLink::failure(*job, protocol::ErrorKind::stream_interrupted, "cut"));
  const auto response = client.read_response();
  ASSERT_TRUE(response);
  EXPECT_FALSE(response->complete);  // no last chunk
  EXPECT_TRUE(client.closed());
  EXPECT_NE(response->body.find("event: error\ndata: {\"error\":{\"message\":\"scripted failure\","
                                "\"type\":\"api_error\"}"),
            std::string::npos);
  EXPECT_EQ(response->body.find("message_stop"), std::string::npos);
}

TEST_F(GatewayServerTest, AClientThatLeavesCancelsItsJob) {
  start();
  for (const std::string& body : {kStream, kChat}) {
    const std::size_t index = link_.submitted();
    RawConnection client(port_);
    client.send(post_request("/v1/chat/completions", body));
    const auto job = link_.job(index);
    ASSERT_TRUE(job);
    client.abort();
    EXPECT_TRUE(link_.wait_for_cancel(job->id)) << body;
  }
  EXPECT_TRUE(eventually([&] { return server_->metrics().client_disconnects.load() == 2; }));
  EXPECT_TRUE(eventually([&] { return server_->metrics().jobs_open.load() == 0; }));
}

TEST_F(GatewayServerTest, PipelinedRequestsAreAnsweredInOrder) {
  link_.auto_answer(true);
  start();
  RawConnection client(port_);
  std::string three;
  for (const char* text : {"one", "two", "three"}) {
    three += post_request(
        "/v1/chat/completions",
        R"({"model":"a/b","messages":[{"role":"user","content":")" + std::string(text) + R"("}]})");
  }
  client.send(three);  // all at once, before any answer
  for (const char* text : {"one", "two", "three"}) {
    const auto response = client.read_response();
    ASSERT_TRUE(response);
    EXPECT_EQ(json::parse(response->body)["choices"][0]["message"]["content"],
              std::string("reply to: ") + text);
  }
}

TEST_F(GatewayServerTest, ARequestPipelinedDuringAStreamWaitsForItsTurn) {
  start();
  RawConnection client(port_);
  client.send(post_request("/v1/chat/completions", kStream));
  const auto first = link_.job(0);
  ASSERT_TRUE(first);
  first->on_event(ScriptedLink::chunk("Hel"));
  ASSERT_TRUE(client.read_until("Hel"));
  client.send(post_request("/v1/chat/completions", kChat));                // while the stream runs
  EXPECT_FALSE(link_.job(1, std::chrono::milliseconds(200)).has_value());  // not yet
  first->on_done(ScriptedLink::success(*first, "Hel"));
  const auto streamed = client.read_response();
  ASSERT_TRUE(streamed && streamed->complete);
  const auto second = link_.job(1);
  ASSERT_TRUE(second);
  second->on_done(ScriptedLink::success(*second, "second"));
  const auto whole = client.read_response();
  ASSERT_TRUE(whole);
  EXPECT_EQ(json::parse(whole->body)["choices"][0]["message"]["content"], "second");
}

TEST_F(GatewayServerTest, MalformedRequestsAre400AndClosed) {
  start();
  for (const std::string bytes : {"GARBAGE\r\n\r\n", "GET / HTTP/9.9\r\n\r\n",
                                  "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: x\r\n\r\n",
                                  "POST /x HTTP/1.1\r\nHost\r\n\r\n"}) {
    RawConnection client(port_);
    client.send(bytes);
    const auto response = client.read_response();
    ASSERT_TRUE(response) << bytes;
    EXPECT_EQ(response->status, 400) << bytes;
    EXPECT_EQ(json::parse(response->body)["error"]["code"], "malformed_request");
    EXPECT_TRUE(client.read_until_closed());
  }
  EXPECT_GE(server_->metrics().hostile_requests.load(), 4u);
}

TEST_F(GatewayServerTest, OversizedHeadersAndBodiesAre431And413) {
  GatewayConfig config;
  config.limits.max_header_bytes = 2048;
  config.limits.max_body_bytes = 4096;
  start(config);
  RawConnection headers(port_);
  headers.send(
      post_request("/v1/chat/completions", kChat, "X-Big: " + std::string(4000, 'a') + "\r\n"));
  auto response = headers.read_response();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 431);
  RawConnection declared(port_);
  declared.send("POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 100000\r\n\r\n");
  response = declared.read_response();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 413);
  EXPECT_EQ(json::parse(response->body)["error"]["code"], "body_too_large");
  RawConnection chunked(port_);
  chunked.send("POST /v1/messages HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
  chunked.send("2000\r\n" + std::string(0x2000, 'x') + "\r\n");
  response = chunked.read_response();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 413);
  EXPECT_EQ(json::parse(response->body)["type"], "error");  // Anthropic's shape on its path
  EXPECT_EQ(link_.submitted(), 0u);
}

TEST_F(GatewayServerTest, AClientTricklingHeadersIsCutOffWith408) {
  GatewayConfig config;
  config.limits.header_timeout = std::chrono::milliseconds(300);
  start(config);
  RawConnection client(port_);
  client.send("POST /v1/chat/completions HTTP/1.1\r\n");
  bool answered = false;
  for (int i = 0; i < 200 && !answered; ++i) {  // a header line every 20 ms, never the end
    client.send("X-Slow-" + std::to_string(i) + ": 1\r\n");
    answered = client.read_until("\r\n\r\n", std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(answered);
  const auto response = client.read_response();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 408);
  EXPECT_TRUE(client.read_until_closed());
}

TEST_F(GatewayServerTest, AnIdleKeepAliveConnectionClosesSilently) {
  GatewayConfig config;
  config.limits.idle_timeout = std::chrono::milliseconds(200);
  start(config);
  RawConnection client(port_);
  EXPECT_TRUE(client.read_until_closed());
  EXPECT_EQ(client.received(), "");
}

TEST_F(GatewayServerTest, ConnectionsOverTheLimitGet503) {
  GatewayConfig config;
  config.limits.max_connections = 3;
  start(config);
  std::vector<std::unique_ptr<RawConnection>> held;
  for (int i = 0; i < 3; ++i) {
    held.push_back(std::make_unique<RawConnection>(port_));
    held.back()->send("GET /healthz HTTP/1.1\r\n\r\n");
    ASSERT_TRUE(held.back()->read_response());  // accepted and served, then kept open
  }
  RawConnection extra(port_);
  const auto response = extra.read_response();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 503);
  EXPECT_EQ(json::parse(response->body)["error"]["code"], "too_many_connections");
  EXPECT_TRUE(extra.read_until_closed());
  EXPECT_EQ(server_->metrics().connections_refused.load(), 1u);
  held.pop_back();  // one leaves: room again
  EXPECT_TRUE(eventually([&] { return server_->open_connections() == 2; }));
  RawConnection again(port_);
  again.send("GET /healthz HTTP/1.1\r\n\r\n");
  const auto ok = again.read_response();
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
}

TEST_F(GatewayServerTest, RoutingErrors) {
  start();
  RawConnection client(port_);
  client.send("GET /v1/embeddings HTTP/1.1\r\n\r\n");
  auto response = client.read_response();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 404);
  EXPECT_EQ(json::parse(response->body)["error"]["type"], "not_found_error");
  client.send("GET /v1/chat/completions HTTP/1.1\r\n\r\n");
  response = client.read_response();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 405);
  EXPECT_EQ(response->headers.at("allow"), "POST");
  client.send(post_request("/v1/chat/completions", R"({"model":"openai/x","messages":[]})"));
  response = client.read_response();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 400);
  EXPECT_EQ(json::parse(response->body)["error"]["param"], "messages");
  client.send(post_request(
      "/v1/chat/completions",
      R"({"model":"a/b","messages":)" + std::string(500, '[') + std::string(500, ']') + "}"));
  response = client.read_response();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 400);
  EXPECT_EQ(json::parse(response->body)["error"]["param"], "messages");
  EXPECT_EQ(json::parse(response->body)["error"]["code"], "too_deep");
  EXPECT_FALSE(client.closed());  // refusals of well-formed HTTP keep the connection
}

TEST_F(GatewayServerTest, KeysInBothHeaderFormsAndErrorShapes) {
  GatewayConfig config;
  config.keys.push_back(ApiKey{"team", sha256("sk-team"), {}, "tenant-1"});
  link_.auto_answer(true);
  start(config);
  RawConnection client(port_);
  client.send(post_request("/v1/chat/completions", kChat));
  auto response = client.read_response();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 401);
  EXPECT_EQ(json::parse(response->body)["error"]["code"], "missing_api_key");
  client.send(
      post_request("/v1/messages",
                   R"({"model":"a/b","max_tokens":5,"messages":[{"role":"user","content":"Hi"}]})",
                   "x-api-key: sk-wrong\r\n"));
  response = client.read_response();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 401);
  EXPECT_EQ(json::parse(response->body)["error"]["type"], "authentication_error");
  client.send(post_request("/v1/chat/completions", kChat, "Authorization: Bearer sk-team\r\n"));
  response = client.read_response();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(link_.job(0)->tenant, "tenant-1");
  client.send("GET /v1/models HTTP/1.1\r\n\r\n");
  EXPECT_EQ(client.read_response()->status, 401);
  client.send("GET /healthz HTTP/1.1\r\n\r\n");  // health needs no key
  EXPECT_EQ(client.read_response()->status, 200);
}

TEST_F(GatewayServerTest, ReadinessFollowsTheBroker) {
  start();
  RawConnection client(port_);
  client.send("GET /readyz HTTP/1.1\r\n\r\n");
  auto response = client.read_response();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 503);
  EXPECT_EQ(json::parse(response->body)["reason"], "the broker did not answer within 1000 ms");
  protocol::StatusReply status;
  status.workers.resize(2);
  link_.set_status(status);
  // The not-ready answer is cached for a second; then the broker is asked again.
  EXPECT_TRUE(eventually([&] {
    client.send("GET /readyz HTTP/1.1\r\n\r\n");
    response = client.read_response();
    return response && response->status == 200;
  }));
  EXPECT_EQ(json::parse(response->body), json::parse(R"({"status":"ready","workers":2})"));
}

// /status.json is `dispatch status --json` of the broker's answer (the one function both use),
// served without a key like /readyz and /metrics, and a 503 in the usual error shape while the
// broker does not answer.
TEST_F(GatewayServerTest, StatusJsonIsTheCliStatusOfTheBrokersAnswer) {
  GatewayConfig config;
  config.keys.push_back(ApiKey{"team", sha256("sk-team"), {}, "tenant-1"});
  start(config);
  RawConnection client(port_);
  client.send("GET /status.json HTTP/1.1\r\n\r\n");
  auto response = client.read_response();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 503);
  const json error = json::parse(response->body);
  EXPECT_EQ(error["error"]["code"], "broker_unavailable");
  EXPECT_EQ(error["error"]["message"], "the broker did not answer a status request within 1000 ms");

  protocol::StatusReply status;
  status.broker_id = "broker-7";
  status.uptime_ms = 1234;
  status.queue_depth = {1, 2, 3};
  status.queue_limit = 100;
  status.workers.push_back(
      protocol::WorkerStatus{"w-<b>1</b>", "host-a", 42, 4, 1, {"openai"}, 10, "ready"});
  status.providers["openai"] = protocol::ProviderCounters{5, 4, 1, 2, 0, 50, 60};
  status.broker_errors["queue_deadline"] = 3;
  status.quotas.push_back(protocol::QuotaStatus{});
  status.quotas.back().key = "openai/gpt-4o";
  status.quotas.back().breaker = "open";
  link_.set_status(status);
  // The 503 is cached for a second like /readyz's answer; then the broker is asked again.
  EXPECT_TRUE(eventually([&] {
    client.send("GET /status.json HTTP/1.1\r\n\r\n");
    response = client.read_response();
    return response && response->status == 200;
  }));
  EXPECT_EQ(response->headers.at("content-type"), "application/json");
  EXPECT_EQ(json::parse(response->body), formats::status_to_json(status));
  EXPECT_EQ(json::parse(response->body)["workers"][0]["worker_id"], "w-<b>1</b>");
  client.send("POST /status.json HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
  response = client.read_response();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 405);
}

// /status: one self-contained page (no external assets) that polls status.json and writes
// strings from it with textContent only.
TEST_F(GatewayServerTest, StatusPageIsSelfContained) {
  GatewayConfig config;
  config.keys.push_back(ApiKey{"team", sha256("sk-team"), {}, "tenant-1"});
  start(config);
  RawConnection client(port_);
  client.send("GET /status HTTP/1.1\r\n\r\n");
  const auto response = client.read_response();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->headers.at("content-type"), "text/html; charset=utf-8");
  const std::string& page = response->body;
  EXPECT_NE(page.find("<!DOCTYPE html>"), std::string::npos);
  EXPECT_NE(page.find("fetch(\"status.json\""), std::string::npos);
  EXPECT_NE(page.find("setTimeout(poll, POLL_MS)"), std::string::npos);
  EXPECT_NE(page.find("const POLL_MS = 2000;"), std::string::npos);
  for (const char* external : {"http://", "https://", "<link", "src=", "@import", "url("}) {
    EXPECT_EQ(page.find(external), std::string::npos) << external;
  }
  EXPECT_EQ(page.find("innerHTML"), std::string::npos);
  EXPECT_EQ(page.find("outerHTML"), std::string::npos);
  EXPECT_EQ(page.find("insertAdjacentHTML"), std::string::npos);
}

TEST_F(GatewayServerTest, ExpectContinueAndHttp10) {
  link_.auto_answer(true);
  start();
  RawConnection client(port_);
  client.send("POST /v1/chat/completions HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: " +
              std::to_string(kChat.size()) + "\r\n\r\n");
  ASSERT_TRUE(client.read_until("HTTP/1.1 100 Continue\r\n\r\n"));
  client.send(kChat);
  ASSERT_TRUE(client.read_until("reply to: Hi"));
  RawConnection old(port_);
  old.send("POST /v1/chat/completions HTTP/1.0\r\nContent-Length: " + std::to_string(kChat.size()) +
           "\r\n\r\n" + kChat);
  const auto response = old.read_response();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(response->headers.at("connection"), "close");
  EXPECT_TRUE(old.read_until_closed());
}

TEST_F(GatewayServerTest, DrainLetsRunningStreamsFinishAndClosesTheRest) {
  start();
  RawConnection idle(port_);
  idle.send("GET /healthz HTTP/1.1\r\n\r\n");
  ASSERT_TRUE(idle.read_response());
  RawConnection streaming(port_);
  streaming.send(post_request("/v1/chat/completions", kStream));
  const auto job = link_.job(0);
  ASSERT_TRUE(job);
  job->on_event(ScriptedLink::chunk("Hel"));
  ASSERT_TRUE(streaming.read_until("Hel"));
  server_->begin_drain();
  EXPECT_TRUE(idle.read_until_closed());
  job->on_event(ScriptedLink::chunk("lo"));
  job->on_done(ScriptedLink::success(*job, "Hello"));
  ASSERT_TRUE(streaming.read_until("[DONE]"));
  EXPECT_TRUE(streaming.read_until_closed());
  EXPECT_TRUE(eventually([&] { return server_->open_connections() == 0; }));
  RawConnection late(port_);
  late.send("GET /healthz HTTP/1.1\r\n\r\n");
  EXPECT_FALSE(late.read_response(std::chrono::milliseconds(500)).has_value());
}

}  // namespace
}  // namespace dispatch::gateway
