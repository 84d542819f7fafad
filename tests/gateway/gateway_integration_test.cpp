// The whole stack as processes — fake provider, broker, worker and dispatch-gateway — driven by
// the official SDKs (node scripts in tests/sdk/gateway) and by raw sockets where the bytes
// themselves are the point.

#include <gtest/gtest.h>
#include <signal.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <thread>

#include "dispatch/client.hpp"
#include "dispatch/gateway/auth.hpp"
#include "dispatch/test/node_script.hpp"
#include "dispatch/test/stack.hpp"
#include "gateway_process.hpp"
#include "raw_http.hpp"

namespace dispatch::gateway {
namespace {

using dispatch::test::Stack;
using dispatch::test::StackBinaries;
using nlohmann::json;
using test::GatewayProcess;
using test::post_request;
using test::RawConnection;

constexpr const char* kAdminKey = "sk-gw-admin";
// sha256("sk-gw-limited"): keys may be configured by digest only.
constexpr const char* kLimitedKeySha256 =
    "a1b4c16a384d1f38bf0426d06db4ce799668f7bbd2972e7f0972e3239acee331";

std::string gateway_yaml(bool with_keys) {
  std::string yaml =
      "models:\n"
      "  fast: {target: openai/gpt-4o-mini, fallbacks: [claude/claude-sonnet]}\n";
  if (!with_keys) yaml += "default_provider: ollama\n";  // the keyed one has none: 404s
  if (with_keys) {
    yaml +=
        "keys:\n"
        "  - {name: admin, key_env: GATEWAY_TEST_ADMIN_KEY, tenant: ops}\n"
        "  - {name: limited, key_sha256: " +
        std::string(kLimitedKeySha256) +
        ", models: [\"openai/*\"]}\n"
        "limits: {max_body_bytes: 65536}\n";
  }
  return yaml;
}

// One stack for the whole suite: starting it is the slow part.
class GatewayIntegrationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    stack_ = std::make_unique<Stack>(StackBinaries::from_build());
    stack_->start_fake_provider();
    stack_->start_broker();
    stack_->start_workers(1, stack_->default_worker_config());
    stack_->wait_for_workers(1);
    dispatch::test::write_text_file(stack_->dir().file("open.yaml"), gateway_yaml(false));
    dispatch::test::write_text_file(stack_->dir().file("keyed.yaml"), gateway_yaml(true));
    open_ = start_gateway(stack_->dir().file("open.yaml"));
    keyed_ = start_gateway(stack_->dir().file("keyed.yaml"));
  }
  // The gateways must stop cleanly (exit 0 after their drain) and, in a sanitizer build, must
  // not have reported anything: ChildProcess::stop() checks both (and the stack's children when
  // it goes) and fails the suite with the log's lines.
  static void TearDownTestSuite() {
    for (auto* gateway : {&open_, &keyed_}) {
      (*gateway)->process().stop(std::chrono::seconds(10));
      gateway->reset();
    }
    stack_.reset();
  }

  static std::unique_ptr<GatewayProcess> start_gateway(const std::string& config,
                                                       std::vector<std::string> extra = {}) {
    dispatch::test::ChildOptions options;
    options.extra_env = {std::string("GATEWAY_TEST_ADMIN_KEY=") + kAdminKey};
    options.stderr_path = stack_->dir().file("gateway.log");
    extra.insert(extra.begin(), {"--config", config});
    return std::make_unique<GatewayProcess>(GATEWAY_BINARY, stack_->frontend(), extra, options);
  }

  static dispatch::test::NodeScriptRun run_script(const std::string& script) {
    return dispatch::test::run_sdk_script(script,
                                          {open_->url(), keyed_->url(), stack_->fake().host_url()});
  }

  static inline std::unique_ptr<Stack> stack_;
  static inline std::unique_ptr<GatewayProcess> open_;
  static inline std::unique_ptr<GatewayProcess> keyed_;
};

TEST_F(GatewayIntegrationTest, OpenAiSdk) {
  EXPECT_EQ(sha256_hex("sk-gw-limited"), kLimitedKeySha256);  // the digest gateway.yaml holds
  const auto run = run_script("gateway/openai.mjs");
  EXPECT_TRUE(run.passed()) << run.describe();
}

TEST_F(GatewayIntegrationTest, AnthropicSdk) {
  const auto run = run_script("gateway/anthropic.mjs");
  EXPECT_TRUE(run.passed()) << run.describe();
}

TEST_F(GatewayIntegrationTest, ReadinessHealthAndMetrics) {
  RawConnection client(open_->port());
  client.send("GET /readyz HTTP/1.1\r\n\r\n");
  auto response = client.read_response();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
  EXPECT_EQ(json::parse(response->body), json::parse(R"({"status":"ready","workers":1})"));
  client.send("GET /healthz HTTP/1.1\r\n\r\n");
  response = client.read_response();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
  client.send("GET /metrics HTTP/1.1\r\n\r\n");
  response = client.read_response();
  ASSERT_TRUE(response);
  EXPECT_NE(
      response->body.find("dispatch_gateway_requests_total{endpoint=\"healthz\",status=\"200\"} "),
      std::string::npos)
      << response->body;
  EXPECT_EQ(response->headers.at("content-type"), "text/plain; version=0.0.4");
}

TEST_F(GatewayIntegrationTest, ReadyzIs503WithoutABroker) {
  dispatch::test::ChildOptions options;
  options.stderr_path = stack_->dir().file("gateway-nobroker.log");
  GatewayProcess lonely(GATEWAY_BINARY, "tcp://127.0.0.1:1", {}, options);
  RawConnection client(lonely.port());
  client.send("GET /readyz HTTP/1.1\r\n\r\n");
  const auto response = client.read_response();
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 503);
  EXPECT_EQ(json::parse(response->body)["reason"], "the broker did not answer within 1000 ms");
}

// The SSE bytes of a spliced stream: the fake provider cuts the first attempt after three
// chunks (paced, so that they reach the client before the cut) and the fallback's identical
// text continues it.
TEST_F(GatewayIntegrationTest, SplicedStreamOnTheWire) {
  RawConnection client(open_->port());
  client.send(post_request(
      "/v1/chat/completions",
      R"({"model":"openai/gpt-4o~cut_after=3~chunk_delay_ms=50~latency_ms=9","stream":true,)"
      R"("retry_count":0,)"
      R"("fallbacks":["ollama/llama3.2"],"messages":[{"role":"user","content":"hello there world"}]})"));
  const auto response = client.read_response(std::chrono::seconds(20));
  ASSERT_TRUE(response);
  ASSERT_TRUE(response->complete) << response->raw_body;
  std::string text;
  std::size_t at = 0;
  while ((at = response->body.find("\"content\":\"", at)) != std::string::npos) {
    at += 11;
    text += response->body.substr(at, response->body.find('"', at) - at);
  }
  EXPECT_EQ(text, "reply to: hello there world lorem ipsum dolor");
  EXPECT_NE(response->body.find("resets=1 splices=1"), std::string::npos) << response->body;
  EXPECT_NE(response->body.find("data: [DONE]\n\n"), std::string::npos);
}

// The first attempt in the fake provider's log for `model` whose traceparent has `trace_id`;
// null when none does.
json attempt_with_trace(Stack& stack, const std::string& model, const std::string& trace_id) {
  for (const json& attempt : stack.fake_log(model)) {
    if (attempt.value("traceparent", "").find(trace_id) != std::string::npos) return attempt;
  }
  return nullptr;
}

// A caller's `traceparent` reaches the provider (with the worker's span as the parent), an
// invalid one is ignored (a fresh trace, as the spec asks), and the answer's cost comes back in
// x-dispatch-cost-usd, priced by the worker's shipped table (gpt-4o-mini: 0.15 / 0.60 USD per
// million input / output tokens).
TEST_F(GatewayIntegrationTest, TraceparentReachesTheProviderAndTheCostComesBack) {
  const std::string trace_id = "0af7651916cd43dd8448eb211c80319c";
  const std::string body =
      R"({"model":"openai/gpt-4o-mini","max_tokens":4,"messages":[{"role":"user","content":"trace me"}]})";
  RawConnection client(open_->port());
  client.send(post_request("/v1/chat/completions", body,
                           "traceparent: 00-" + trace_id + "-b7ad6b7169203331-01\r\n"));
  const auto response = client.read_response(std::chrono::seconds(20));
  ASSERT_TRUE(response);
  ASSERT_EQ(response->status, 200) << response->body;
  const json usage = json::parse(response->body)["usage"];
  ASSERT_TRUE(response->headers.count("x-dispatch-cost-usd")) << response->body;
  const double cost = std::stod(response->headers.at("x-dispatch-cost-usd"));
  EXPECT_NEAR(cost,
              (usage["prompt_tokens"].get<double>() * 0.15 +
               usage["completion_tokens"].get<double>() * 0.60) /
                  1e6,
              1e-12);

  const json attempt = attempt_with_trace(*stack_, "gpt-4o-mini", trace_id);
  ASSERT_FALSE(attempt.is_null()) << stack_->fake_log("gpt-4o-mini").dump();
  const std::string sent = attempt["traceparent"];
  EXPECT_EQ(sent.size(), 55u) << sent;
  EXPECT_EQ(sent.substr(0, 36), "00-" + trace_id + "-");
  EXPECT_NE(sent.substr(36, 16), "b7ad6b7169203331");  // the worker's span, not the caller's
  EXPECT_EQ(sent.substr(52), "-01");

  // Uppercase hex is not a traceparent: the job runs, under a trace of its own.
  const std::string bad_trace = "0AF7651916CD43DD8448EB211C80319D";
  RawConnection second(open_->port());
  second.send(post_request("/v1/chat/completions", body,
                           "traceparent: 00-" + bad_trace + "-b7ad6b7169203331-01\r\n"));
  const auto answered = second.read_response(std::chrono::seconds(20));
  ASSERT_TRUE(answered);
  EXPECT_EQ(answered->status, 200) << answered->body;
  for (const json& seen : stack_->fake_log("gpt-4o-mini")) {
    const std::string header = seen.value("traceparent", "");
    if (header.empty()) continue;  // an SDK test's call straight to the fake provider
    EXPECT_EQ(header.find("0af7651916cd43dd8448eb211c80319d"), std::string::npos) << header;
    EXPECT_EQ(header.size(), 55u) << header;
  }
}

TEST_F(GatewayIntegrationTest, AClientThatLeavesCancelsItsProviderCall) {
  const std::string model = "gpt-4o~chunk_delay_ms=300~tokens=41";
  RawConnection client(open_->port());
  client.send(post_request("/v1/chat/completions",
                           R"({"model":"openai/)" + model +
                               R"(","stream":true,"messages":[{"role":"user","content":"hi"}]})"));
  ASSERT_TRUE(client.read_until("\"content\":"));
  client.abort();
  json attempt;
  for (int i = 0; i < 100; ++i) {
    const json log = stack_->fake_log(model);
    if (!log.empty() && log[0].contains("client_closed_ms")) {
      attempt = log[0];
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_FALSE(attempt.is_null()) << stack_->fake_log(model).dump();
  EXPECT_LT(attempt["chunks_sent"].get<int>(), 41);
}

// Each API key's jobs reach the broker under the key's tenant ("ops" by config, "limited" by
// default the name): the broker, without CURVE, counts them per client as "/TENANT". Were the
// tenant not sent, both keys' jobs would be counted under the gateway's own "" entry.
TEST_F(GatewayIntegrationTest, EachKeysJobsAreItsTenantsJobsAtTheBroker) {
  ClientOptions options;
  options.broker_endpoint = stack_->frontend();
  Client observer(options);
  const auto succeeded = [&observer](const std::string& tenant) -> uint64_t {
    const auto clients = observer.status().clients;
    const auto it = clients.find("/" + tenant);
    return it == clients.end() ? 0 : it->second.succeeded;
  };
  const uint64_t ops_before = succeeded("ops");
  const uint64_t limited_before = succeeded("limited");
  for (const auto& [key, text] : {std::pair{kAdminKey, "from ops"}, {"sk-gw-limited", "from ci"}}) {
    RawConnection client(keyed_->port());
    client.send(post_request("/v1/chat/completions",
                             std::string(R"({"model":"openai/gpt-4o-mini","messages":[)") +
                                 R"({"role":"user","content":")" + text + R"("}]})",
                             std::string("Authorization: Bearer ") + key + "\r\n"));
    const auto response = client.read_response(std::chrono::seconds(20));
    ASSERT_TRUE(response);
    EXPECT_EQ(response->status, 200) << response->body;
    EXPECT_NE(response->body.find(std::string("reply to: ") + text), std::string::npos)
        << response->body;
  }
  // The answer reaches the caller as the broker counts it: allow the count a moment.
  bool counted = false;
  for (int i = 0; i < 100 && !counted; ++i) {
    counted = succeeded("ops") == ops_before + 1 && succeeded("limited") == limited_before + 1;
    if (!counted) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const auto clients = observer.status().clients;
  std::string seen;
  for (const auto& [label, counts] : clients) seen += "'" + label + "' ";
  EXPECT_TRUE(counted) << "clients at the broker: " << seen;
}

TEST_F(GatewayIntegrationTest, SigtermDrainsARunningStreamThenExits0) {
  auto gateway = start_gateway(stack_->dir().file("open.yaml"), {"--drain-timeout-ms", "10000"});
  RawConnection streaming(gateway->port());
  streaming.send(
      post_request("/v1/chat/completions",
                   R"({"model":"openai/gpt-4o~chunk_delay_ms=150~tokens=10","stream":true,)"
                   R"("messages":[{"role":"user","content":"hi"}]})"));
  ASSERT_TRUE(streaming.read_until("\"content\":"));
  gateway->process().send_signal(SIGTERM);
  ASSERT_TRUE(streaming.read_until("data: [DONE]\n\n", std::chrono::seconds(20)));
  EXPECT_TRUE(streaming.read_until_closed());
  const auto status = gateway->process().wait_for_exit(std::chrono::seconds(15));
  ASSERT_TRUE(status);
  EXPECT_TRUE(status->success()) << "exit " << status->code << " signal " << status->signal;
  RawConnection late(gateway->port());
  EXPECT_FALSE(late.valid());  // nothing listens any more
}

}  // namespace
}  // namespace dispatch::gateway
